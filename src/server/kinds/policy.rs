//! Strategies of the `policy` API group's kinds (placeholder until filled in).

use super::KindStrategy;

/// The strategy for `kind` of this group, if it has special behaviour.
pub fn strategy(_kind: &str) -> Option<&'static dyn KindStrategy> {
    None
}
