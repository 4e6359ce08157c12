//! The clock, injected. Production uses [`SystemClock`]; tests use
//! [`ManualClock`] and move time by hand, so leases, backoff and dedup
//! windows are tested without sleeping.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use steadfast_core::Timestamp;

pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now, truncated to whole milliseconds (the precision storage keeps).
    fn now(&self) -> Timestamp;

    /// Time since an arbitrary fixed start, never going backwards, for
    /// measuring intervals (rate limits): unlike [`Clock::now`], a wall
    /// clock stepped back by NTP does not move it.
    fn elapsed(&self) -> Duration;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let now = Timestamp::now();
        Timestamp::from_millisecond(now.as_millisecond()).expect("the current time is in range")
    }

    fn elapsed(&self) -> Duration {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
    start: Timestamp,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock {
            now: Mutex::new(start),
            start,
        }
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().expect("not poisoned");
        *now = now.saturating_add(by).expect("in range");
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().expect("not poisoned")
    }

    /// Moves with [`ManualClock::advance`] (which only goes forward).
    fn elapsed(&self) -> Duration {
        self.now().duration_since(self.start).unsigned_abs()
    }
}
