//! Client-certificate authentication (placeholder).
