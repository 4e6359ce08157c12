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

/// Randomness, injected like the clock: job ids, lease tokens and retry
/// jitter all come from it, so a test can make them repeatable.
pub trait Random: Send + Sync + std::fmt::Debug + 'static {
    /// 64 random bits.
    fn next_u64(&self) -> u64;
}

/// The operating system's randomness (through `rand`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRandom;

impl Random for SystemRandom {
    fn next_u64(&self) -> u64 {
        rand::random()
    }
}

/// Repeatable randomness for tests: the same seed, the same sequence.
#[derive(Debug)]
pub struct SeededRandom {
    rng: Mutex<rand::rngs::StdRng>,
}

impl SeededRandom {
    pub fn new(seed: u64) -> SeededRandom {
        use rand::SeedableRng;
        SeededRandom {
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
        }
    }
}

impl Random for SeededRandom {
    fn next_u64(&self) -> u64 {
        use rand::RngCore;
        self.rng.lock().expect("not poisoned").next_u64()
    }
}

/// A UUIDv7 from `random` at the clock's `now`: time-ordered across
/// milliseconds, random within one.
pub fn uuid_v7(now: Timestamp, random: &dyn Random) -> uuid::Uuid {
    let mut bytes = [0u8; 10];
    bytes[..8].copy_from_slice(&random.next_u64().to_le_bytes());
    bytes[8..].copy_from_slice(&random.next_u64().to_le_bytes()[..2]);
    uuid::Builder::from_unix_timestamp_millis(now.as_millisecond().max(0) as u64, &bytes).into_uuid()
}
