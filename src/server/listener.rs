//! (placeholder: filled in by the work that owns this module)
