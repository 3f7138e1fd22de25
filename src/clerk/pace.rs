//! One pace for every Backend API request of the process (first sights and `sync`; the JWKS is
//! not rate limited by Clerk and does not take a turn): no window of [`WINDOW`] holds more than
//! `limit` of them, so a burst is spread out instead of drawing 429s, which would block the
//! endpoint for everyone until their `Retry-After`.
//!
//! `limit` turns circulate. A request takes one before it is sent and hands it back [`WINDOW`]
//! after its answer arrived (or it failed). Two requests on one turn are therefore more than a
//! window apart at Clerk, whatever the network's delays, and no window at Clerk sees more than
//! `limit` of them. Waiters are served first come, first served (tokio's semaphore is fair),
//! which lets a caller with a deadline learn at once when its turn would come too late.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Clerk's rate-limit window: its limits are stated per 10 seconds.
pub const WINDOW: Duration = Duration::from_secs(10);

/// A turn that would leave less than this before the caller's deadline is refused at once: the
/// request itself needs the time, and a timer firing a little late must not turn a wait into a
/// timeout.
pub const LEAD: Duration = Duration::from_millis(250);

/// The turns of one process.
#[derive(Debug)]
pub struct Pace {
    limit: u32,
    window: Duration,
    turns: Arc<Semaphore>,
    /// When each turn that is cooling down comes back, earliest first.
    cooling: Mutex<VecDeque<Instant>>,
    waiting: AtomicU64,
    waited_micros: AtomicU64,
}

/// A turn, held while its request is out; dropping it starts its cool-down.
#[derive(Debug)]
pub struct Turn {
    pace: Arc<Pace>,
    permit: Option<OwnedSemaphorePermit>,
}

/// No turn before the deadline: the earliest it could come, from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLate {
    pub wait: Duration,
}

impl Pace {
    /// `limit` requests per [`WINDOW`].
    pub fn new(limit: u32) -> Arc<Self> {
        Self::with_window(limit, WINDOW)
    }

    /// Another window: for tests of the pacing itself; the service always uses [`WINDOW`].
    pub fn with_window(limit: u32, window: Duration) -> Arc<Self> {
        let limit = limit.max(1);
        Arc::new(Self {
            limit,
            window,
            turns: Arc::new(Semaphore::new(limit as usize)),
            cooling: Mutex::new(VecDeque::with_capacity((limit as usize).min(1024))),
            waiting: AtomicU64::new(0),
            waited_micros: AtomicU64::new(0),
        })
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Requests waiting for a turn now.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The time all requests have waited for their turns, in all.
    pub fn waited(&self) -> Duration {
        Duration::from_micros(self.waited_micros.load(Ordering::Relaxed))
    }

    /// When the next waiter in line would get a turn, at the earliest: a free turn now; else the
    /// turns cooling down, in the order they come back; else turns still out come back no sooner
    /// than a window from now; a waiter further back waits a window more per round.
    pub fn earliest(&self) -> Instant {
        let now = Instant::now();
        let free = self.turns.available_permits() as u64;
        let ahead = self.waiting();
        if free > ahead {
            return now;
        }
        let cooling = lock(&self.cooling);
        let limit = u64::from(self.limit);
        // The position of the new waiter among the turns that come back, counting from 0.
        let position = ahead - free;
        let rounds = position / limit;
        let index = (position % limit) as usize;
        let back = cooling
            .get(index)
            .copied()
            .unwrap_or(now + self.window)
            .max(now);
        back + self.window * rounds as u32
    }

    /// A turn, waiting as long as it takes (`sync`).
    pub async fn turn(self: &Arc<Self>) -> Turn {
        self.wait(None).await.expect("no deadline")
    }

    /// A turn before `deadline`, or at once the news that it would come too late (a first sight
    /// whose retry budget would run out in the queue): when the earliest turn leaves less than
    /// [`LEAD`] before the deadline. A wait that was estimated to fit still ends at the deadline.
    pub async fn turn_before(self: &Arc<Self>, deadline: Instant) -> Result<Turn, TooLate> {
        self.wait(Some(deadline)).await
    }

    async fn wait(self: &Arc<Self>, deadline: Option<Instant>) -> Result<Turn, TooLate> {
        if let Ok(permit) = self.turns.clone().try_acquire_owned() {
            return Ok(self.turn_of(permit));
        }
        let start = Instant::now();
        if let Some(deadline) = deadline {
            let earliest = self.earliest();
            if earliest + LEAD >= deadline {
                return Err(TooLate {
                    wait: earliest.saturating_duration_since(start),
                });
            }
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let acquire = self.turns.clone().acquire_owned();
        let got = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), acquire).await.ok(),
            None => Some(acquire.await),
        };
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        self.waited_micros
            .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
        match got {
            Some(Ok(permit)) => Ok(self.turn_of(permit)),
            // The semaphore is never closed; a timeout means the turns came back later than
            // estimated (requests still out took long to answer).
            _ => Err(TooLate {
                wait: self.earliest().saturating_duration_since(Instant::now()),
            }),
        }
    }

    fn turn_of(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Turn {
        Turn {
            pace: Arc::clone(self),
            permit: Some(permit),
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        // Outside a runtime (a test's end) the turn is simply given back.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let back = Instant::now() + self.pace.window;
        lock(&self.pace.cooling).push_back(back);
        let pace = Arc::clone(&self.pace);
        rt.spawn(async move {
            tokio::time::sleep_until(back.into()).await;
            // Entries come back in order: whichever is earliest has passed too.
            lock(&pace.cooling).pop_front();
            drop(permit);
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn no_window_holds_more_than_the_limit() {
        let pace = Pace::with_window(3, W);
        let t0 = Instant::now();
        let mut granted = Vec::new();
        for _ in 0..7 {
            let turn = pace.turn().await;
            granted.push(t0.elapsed());
            // The request takes 10 ms.
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(turn);
        }
        // Three at once, three a window after each one's answer, then the seventh.
        let rounds: Vec<u128> = granted
            .iter()
            .map(|d| d.as_millis() / W.as_millis())
            .collect();
        assert_eq!(rounds, [0, 0, 0, 1, 1, 1, 2], "{granted:?}");
        for w in granted.windows(4) {
            assert!(w[3] - w[0] > W, "{granted:?}");
        }
        assert!(pace.waited() >= W, "{:?}", pace.waited());
    }

    #[tokio::test]
    async fn a_turn_past_the_deadline_is_refused_at_once() {
        let pace = Pace::with_window(2, W);
        let a = pace.turn().await;
        let b = pace.turn().await;
        drop((a, b));
        let start = Instant::now();
        let refused = pace.turn_before(start + W / 2).await.unwrap_err();
        assert!(start.elapsed() < W / 10, "refused without waiting");
        assert!(refused.wait > W / 2, "{refused:?}");
        let granted = pace.turn_before(start + W * 2).await.unwrap();
        assert!(start.elapsed() >= W * 9 / 10, "{:?}", start.elapsed());
        drop(granted);
        assert_eq!(pace.waiting(), 0);
    }

    #[tokio::test]
    async fn waiters_further_back_are_told_a_later_turn() {
        let pace = Pace::with_window(1, Duration::from_secs(10));
        let first = pace.turn().await;
        let p = pace.clone();
        let second = tokio::spawn(async move { p.turn().await });
        while pace.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        // The first turn is still out: it comes back no sooner than a window from now, and the
        // one waiter ahead takes it, so a newcomer waits two windows.
        let wait = pace.earliest() - Instant::now();
        assert!(wait > Duration::from_secs(19), "{wait:?}");
        let refused = pace
            .turn_before(Instant::now() + Duration::from_secs(15))
            .await
            .unwrap_err();
        assert!(refused.wait > Duration::from_secs(19));
        drop(first);
        second.abort();
    }
}
