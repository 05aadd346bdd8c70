//! Service-account token authentication (placeholder).
