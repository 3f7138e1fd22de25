//! A circuit breaker for Clerk's Backend API: during an outage, first sights must not each
//! wait out the whole retry budget.
//!
//! - **Closed**: lookups go through. A lookup that ends failed (every try was a 429, a 5xx, a
//!   timeout or a connection error) counts one failure; a lookup that Clerk answered (200, 404,
//!   401/403, anything not retryable) resets the count. `failures` consecutive failed lookups open
//!   the breaker.
//! - **Open**: every lookup fails at once with the time left of the cool-down as `Retry-After`
//!   (at least Clerk's own `Retry-After` when the last failure carried one). No network call.
//! - **Half-open**: once the cool-down has passed, exactly one lookup goes through as a probe (a
//!   single try, no retries); the others still fail at once. Clerk answers the probe: closed.
//!   The probe fails: open again for another cool-down. A probe whose request is cancelled (the
//!   caller went away, the request time limit) frees the slot for the next lookup.
//!
//! Known users never reach this code: they are answered from the database.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// The state as the outside sees it (logs, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// Shared by every clone of the Backend API client.
#[derive(Debug)]
pub struct Breaker {
    /// Consecutive failed lookups that open the breaker; 0 disables it.
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

/// A lookup refused because the breaker is open (or a probe is already out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// Whole seconds, at least one: what the caller is told to wait.
    pub retry_after: Duration,
}

/// Leave to make one lookup. Report how it ended with [`Permit::succeeded`] or
/// [`Permit::failed`]; a permit dropped without either (the request was cancelled) counts as a
/// failure when one of its tries had already failed, and frees the probe slot when it was the
/// probe.
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    saw_failure: bool,
    settled: bool,
}

/// Round up to whole seconds, at least one: `Retry-After` is sent in seconds.
fn whole_seconds(d: Duration) -> Duration {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether lookups are being refused right now (open and still cooling down, or a probe is
    /// out). A lookup between two tries asks this to stop retrying into an outage.
    pub fn is_refusing(&self) -> bool {
        self.is_refusing_at(Instant::now())
    }

    fn is_refusing_at(&self, now: Instant) -> bool {
        match *self.lock() {
            State::Closed { .. } => false,
            State::Open { until } => now < until,
            State::HalfOpen { probing } => probing,
        }
    }

    /// May a lookup go out now?
    pub fn admit(&self) -> Result<Permit<'_>, Rejected> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Result<Permit<'_>, Rejected> {
        let permit = |probe| Permit {
            breaker: self,
            probe,
            saw_failure: false,
            settled: false,
        };
        if self.threshold == 0 {
            return Ok(permit(false));
        }
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(permit(false)),
            State::Open { until } if now < until => Err(Rejected {
                retry_after: whole_seconds(until - now),
            }),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                tracing::info!(
                    "Clerk Backend API circuit breaker half-open: one probe goes through"
                );
                Ok(permit(true))
            }
            // The probe is out; it ends within one request timeout.
            State::HalfOpen { probing: true } => Err(Rejected {
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    fn on_success(&self) {
        let mut state = self.lock();
        if !matches!(*state, State::Closed { .. }) {
            tracing::info!("Clerk Backend API answered; circuit breaker closed");
        }
        *state = State::Closed { failures: 0 };
    }

    fn on_failure(&self, probe: bool, retry_after: Option<Duration>, now: Instant) {
        if self.threshold == 0 {
            return;
        }
        let cooldown = self.cooldown.max(retry_after.unwrap_or_default());
        let mut state = self.lock();
        match *state {
            State::Closed { failures } if failures + 1 >= self.threshold => {
                tracing::warn!(
                    failures = failures + 1,
                    cooldown_ms = cooldown.as_millis() as u64,
                    "Clerk Backend API failing; circuit breaker open: first sights fail fast"
                );
                *state = State::Open {
                    until: now + cooldown,
                };
            }
            State::Closed { failures } => {
                *state = State::Closed {
                    failures: failures + 1,
                }
            }
            State::HalfOpen { .. } if probe => {
                tracing::warn!(
                    cooldown_ms = cooldown.as_millis() as u64,
                    "the probe of Clerk's Backend API failed; circuit breaker open again"
                );
                *state = State::Open {
                    until: now + cooldown,
                };
            }
            // A lookup admitted before the breaker opened, ending now: the breaker already knows.
            State::HalfOpen { .. } | State::Open { .. } => {}
        }
    }

    fn on_abandoned_probe(&self) {
        let mut state = self.lock();
        if let State::HalfOpen { probing: true } = *state {
            *state = State::HalfOpen { probing: false };
        }
    }
}

impl Permit<'_> {
    /// The single lookup let through while half-open: it makes one try, no retries.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// One try failed in a retryable way (the lookup may still succeed on a later try).
    pub fn try_failed(&mut self) {
        self.saw_failure = true;
    }

    /// Clerk answered (with the user, a 404, a 401/403, or any answer that is not retried).
    pub fn succeeded(mut self) {
        self.settled = true;
        self.breaker.on_success();
    }

    /// Every try failed in a retryable way; `retry_after` is Clerk's own, when it sent one.
    pub fn failed(mut self, retry_after: Option<Duration>) {
        self.settled = true;
        self.breaker
            .on_failure(self.probe, retry_after, Instant::now());
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if self.saw_failure {
            self.breaker.on_failure(self.probe, None, Instant::now());
        } else if self.probe {
            self.breaker.on_abandoned_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL: Duration = Duration::from_secs(5);

    fn fail(b: &Breaker, now: Instant) {
        let p = b.admit_at(now).expect("admitted");
        b.on_failure(p.probe, None, now);
        std::mem::forget(p);
    }

    #[test]
    fn opens_after_n_consecutive_failures_only() {
        let b = Breaker::new(3, COOL);
        let t = Instant::now();
        fail(&b, t);
        fail(&b, t);
        b.admit_at(t).unwrap().succeeded();
        fail(&b, t);
        fail(&b, t);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "a success resets the count"
        );
        fail(&b, t);
        assert_eq!(b.state(), BreakerState::Open);
        let r = b.admit_at(t + Duration::from_millis(1500)).unwrap_err();
        assert_eq!(r.retry_after, Duration::from_secs(4), "rounded up");
        assert!(b.is_refusing_at(t));
    }

    #[test]
    fn half_open_lets_one_probe_through_and_closes_on_an_answer() {
        let b = Breaker::new(1, COOL);
        let t = Instant::now();
        fail(&b, t);
        let later = t + COOL;
        let probe = b.admit_at(later).unwrap();
        assert!(probe.is_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(
            b.admit_at(later).unwrap_err().retry_after,
            Duration::from_secs(1),
            "only one probe at a time"
        );
        probe.succeeded();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(!b.admit_at(later).unwrap().is_probe());
    }

    #[test]
    fn a_failed_probe_opens_again_for_a_full_cool_down() {
        let b = Breaker::new(1, COOL);
        let t = Instant::now();
        fail(&b, t);
        let later = t + COOL + Duration::from_millis(10);
        let probe = b.admit_at(later).unwrap();
        b.on_failure(probe.probe, None, later);
        std::mem::forget(probe);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(
            b.admit_at(later).unwrap_err().retry_after,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn clerks_retry_after_lengthens_the_cool_down() {
        let b = Breaker::new(1, COOL);
        let t = Instant::now();
        let p = b.admit_at(t).unwrap();
        b.on_failure(false, Some(Duration::from_secs(30)), t);
        std::mem::forget(p);
        assert_eq!(
            b.admit_at(t).unwrap_err().retry_after,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn a_cancelled_probe_frees_the_slot_and_a_cancelled_failing_lookup_counts() {
        let b = Breaker::new(1, Duration::ZERO);
        let t = Instant::now();
        fail(&b, t);
        drop(b.admit_at(t).unwrap());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.admit_at(t).unwrap().is_probe(), "the slot is free again");

        let b = Breaker::new(1, COOL);
        let mut p = b.admit().unwrap();
        p.try_failed();
        drop(p);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn late_failures_from_before_the_opening_change_nothing() {
        let b = Breaker::new(1, COOL);
        let t = Instant::now();
        let early = b.admit_at(t).unwrap();
        fail(&b, t);
        let probe = b.admit_at(t + COOL).unwrap();
        early.failed(None);
        assert_eq!(b.state(), BreakerState::HalfOpen, "the probe decides");
        probe.succeeded();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn zero_disables_it() {
        let b = Breaker::new(0, COOL);
        for _ in 0..100 {
            b.admit().unwrap().failed(None);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
