//! Restart decisions: whether a module that exited is started again, and after how long. Pure:
//! durations in, durations out (the supervisor measures them on the injected clock).

use std::time::Duration;

use crate::deployment::RestartPolicy;

/// How a module process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

impl Exit {
    pub fn from_status(s: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt as _;
        match (s.code(), s.signal()) {
            (Some(c), _) => Self::Code(c),
            (None, Some(sig)) => Self::Signal(sig),
            (None, None) => Self::Code(-1),
        }
    }

    pub fn success(self) -> bool {
        self == Self::Code(0)
    }

    /// The code reported as `exitCode` (a signal counts as 128 + its number, as shells show it).
    pub fn code(self) -> i32 {
        match self {
            Self::Code(c) => c,
            Self::Signal(s) => 128 + s,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(c) => write!(f, "exit code {c}"),
            Self::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// Whether `policy` starts a module again after `exit`.
pub fn should_restart(policy: RestartPolicy, exit: Exit) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure | RestartPolicy::OnUnhealthy => !exit.success(),
        RestartPolicy::Never => false,
    }
}

/// Restart back-off: the n-th consecutive restart waits `base * 2^(n-1)`, at most `max`; a run
/// that lasted `stable` or longer resets the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    pub stable: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
            stable: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The wait before restart number `consecutive` (1 for the first).
    pub fn delay(&self, consecutive: u32) -> Duration {
        let doublings = consecutive.saturating_sub(1).min(30);
        self.base
            .checked_mul(1u32 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The consecutive-restart count after a run of `ran` that ended: reset when the run was
    /// stable, else one more.
    pub fn next_count(&self, consecutive: u32, ran: Duration) -> u32 {
        if ran >= self.stable {
            1
        } else {
            consecutive.saturating_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        use RestartPolicy::*;
        let ok = Exit::Code(0);
        let bad = Exit::Code(3);
        let killed = Exit::Signal(9);
        assert!(should_restart(Always, ok) && should_restart(Always, killed));
        assert!(!should_restart(OnFailure, ok));
        assert!(should_restart(OnFailure, bad) && should_restart(OnFailure, killed));
        assert!(should_restart(OnUnhealthy, killed) && !should_restart(OnUnhealthy, ok));
        assert!(!should_restart(Never, bad) && !should_restart(Never, killed));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Exit::Signal(9).code(), 137);
        assert_eq!(Exit::Code(2).code(), 2);
        assert!(Exit::Code(0).success() && !Exit::Signal(15).success());
    }

    #[test]
    fn delays_double_up_to_the_cap_and_a_stable_run_resets() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            stable: Duration::from_secs(60),
        };
        let d: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(d, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
        assert_eq!(b.next_count(4, Duration::from_secs(2)), 5);
        assert_eq!(b.next_count(4, Duration::from_secs(60)), 1);
    }
}
