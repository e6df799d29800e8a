//! The rise and fall counting of one check: an up server goes down after `fall` failed
//! checks in a row, a down server comes up after `rise` passed checks in a row. Anything
//! else changes counters only.

use std::time::Instant;

use super::spec::{CheckSpec, StartState};

/// One check's state and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckState {
    /// Whether the check holds the server in service.
    pub up: bool,
    /// Passed checks in a row (0 after a failure).
    pub passed_in_row: u32,
    /// Failed checks in a row (0 after a pass).
    pub failed_in_row: u32,
    /// Checks run.
    pub checks: u64,
    /// Checks failed.
    pub failures: u64,
    /// Why the last failed check failed.
    pub last_error: Option<String>,
    /// Whether the last check passed (`None` before the first).
    pub last_passed: Option<bool>,
    /// Since when `up` has its value.
    pub since: Instant,
}

/// A change of state: the check has just taken the server down or brought it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// `fall` failures in a row.
    Down,
    /// `rise` passes in a row.
    Up,
}

impl CheckState {
    /// The state before any check, by the spec's `start`.
    pub fn new(spec: &CheckSpec, now: Instant) -> Self {
        CheckState {
            up: spec.start == StartState::Up,
            passed_in_row: 0,
            failed_in_row: 0,
            checks: 0,
            failures: 0,
            last_error: None,
            last_passed: None,
            since: now,
        }
    }

    /// Counts one check's outcome; the transition it causes, if any.
    pub fn record(
        &mut self,
        spec: &CheckSpec,
        outcome: Result<(), String>,
        now: Instant,
    ) -> Option<Transition> {
        self.checks += 1;
        match outcome {
            Ok(()) => {
                self.last_passed = Some(true);
                self.passed_in_row = self.passed_in_row.saturating_add(1);
                self.failed_in_row = 0;
                if !self.up && self.passed_in_row >= spec.rise {
                    self.up = true;
                    self.since = now;
                    return Some(Transition::Up);
                }
            }
            Err(reason) => {
                self.last_passed = Some(false);
                self.failures += 1;
                self.last_error = Some(reason);
                self.failed_in_row = self.failed_in_row.saturating_add(1);
                self.passed_in_row = 0;
                if self.up && self.failed_in_row >= spec.fall {
                    self.up = false;
                    self.since = now;
                    return Some(Transition::Down);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::spec::Probe;
    use std::time::Duration;

    fn spec(rise: u32, fall: u32, start: StartState) -> CheckSpec {
        CheckSpec {
            probe: Probe::Tcp,
            port: 80,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise,
            fall,
            start,
        }
    }

    #[test]
    fn fall_failures_in_a_row_take_it_down_and_rise_passes_bring_it_back() {
        let s = spec(2, 3, StartState::Up);
        let now = Instant::now();
        let mut state = CheckState::new(&s, now);
        let fail = || Err("refused".to_string());
        assert_eq!(state.record(&s, fail(), now), None);
        assert_eq!(state.record(&s, fail(), now), None);
        assert_eq!(
            state.record(&s, Ok(()), now),
            None,
            "a pass resets the count"
        );
        assert_eq!(state.record(&s, fail(), now), None);
        assert_eq!(state.record(&s, fail(), now), None);
        assert_eq!(state.record(&s, fail(), now), Some(Transition::Down));
        assert_eq!(state.record(&s, fail(), now), None, "already down");
        assert_eq!(state.record(&s, Ok(()), now), None);
        assert_eq!(state.record(&s, Ok(()), now), Some(Transition::Up));
        assert_eq!((state.checks, state.failures), (9, 6));
        assert_eq!(state.last_error.as_deref(), Some("refused"));
    }

    #[test]
    fn alpha_mode_starts_down_until_rise_passes() {
        let s = spec(2, 1, StartState::Down);
        let now = Instant::now();
        let mut state = CheckState::new(&s, now);
        assert!(!state.up);
        assert_eq!(state.record(&s, Ok(()), now), None);
        assert_eq!(state.record(&s, Ok(()), now), Some(Transition::Up));
        assert_eq!(
            state.record(&s, Err("x".into()), now),
            Some(Transition::Down)
        );
    }
}
