//! Container restart back-off as the kubelet does it: 10 s doubling to a
//! 5 min cap, reset after a container ran for 10 min without trouble.

use std::time::Duration;

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);
/// A container that ran this long before exiting starts over at `INITIAL`.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// The delay before the next restart, given how many restarts happened in a
/// row (0 for the first restart) and how long the last run lasted.
pub fn delay(consecutive_restarts: u32, last_run: Duration) -> Duration {
    if last_run >= RESET_AFTER {
        return Duration::ZERO;
    }
    if consecutive_restarts == 0 {
        return Duration::ZERO;
    }
    let factor = 1u64 << (consecutive_restarts - 1).min(10);
    (INITIAL * factor as u32).min(MAX)
}

/// Whether a container that exited with `exit_code` is restarted under `policy`.
pub fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap() {
        let short = Duration::from_secs(1);
        assert_eq!(delay(0, short), Duration::ZERO);
        assert_eq!(delay(1, short), Duration::from_secs(10));
        assert_eq!(delay(2, short), Duration::from_secs(20));
        assert_eq!(delay(3, short), Duration::from_secs(40));
        assert_eq!(delay(6, short), Duration::from_secs(300));
        assert_eq!(delay(40, short), Duration::from_secs(300));
    }

    #[test]
    fn a_long_run_resets() {
        assert_eq!(delay(5, Duration::from_secs(601)), Duration::ZERO);
    }

    #[test]
    fn policies() {
        assert!(should_restart("Always", 0));
        assert!(should_restart("Always", 1));
        assert!(!should_restart("OnFailure", 0));
        assert!(should_restart("OnFailure", 2));
        assert!(!should_restart("Never", 1));
    }
}
