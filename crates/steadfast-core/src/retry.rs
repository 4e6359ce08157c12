//! The retry policy: exponential backoff with full jitter.
//!
//! "Full jitter" (a uniformly random delay between zero and the exponential
//! bound) spreads retries of many jobs that failed together, which is what
//! stops one slow dependency from turning into a retry storm. The random
//! sample is an argument, so the policy stays a pure function.

use std::time::Duration;

/// How long to wait before the next attempt of a failed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The bound for the first retry; it doubles with each further attempt.
    pub base: Duration,
    /// No delay is ever longer than this.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// The exponential bound after `failures` consecutive failed attempts (1-based).
    pub fn bound(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(62);
        let base_ms = u64::try_from(self.base.as_millis()).unwrap_or(u64::MAX);
        let cap_ms = u64::try_from(self.cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(base_ms.saturating_mul(1u64 << doublings).min(cap_ms))
    }

    /// The delay before the next attempt: uniform in `[0, bound]`, chosen by `sample`.
    pub fn delay(&self, failures: u32, sample: u64) -> Duration {
        let bound_ms = u64::try_from(self.bound(failures).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(sample % bound_ms.saturating_add(1))
    }
}

/// Derives a per-job random sample from one seed, so a backend applying many
/// transitions in one batch needs a single random number from its caller.
pub fn jitter_sample(seed: u64, discriminator: &[u8]) -> u64 {
    // splitmix64 over an FNV-1a hash of the discriminator: cheap, well mixed,
    // and not security-relevant.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in discriminator {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = seed ^ hash;
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bound_doubles_then_caps() {
        let policy = RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
        };
        let bounds: Vec<u64> = (1..=6).map(|n| policy.bound(n).as_secs()).collect();
        assert_eq!(bounds, [1, 2, 4, 8, 10, 10]);
        assert_eq!(policy.bound(u32::MAX), Duration::from_secs(10));
    }

    proptest! {
        #[test]
        fn delay_is_never_above_the_bound(failures in 1u32..200, sample: u64, base_ms in 1u64..10_000, cap_ms in 1u64..10_000_000) {
            let policy = RetryPolicy { base: Duration::from_millis(base_ms), cap: Duration::from_millis(cap_ms) };
            prop_assert!(policy.delay(failures, sample) <= policy.bound(failures));
            prop_assert!(policy.bound(failures) <= policy.cap);
        }
    }

    #[test]
    fn jitter_samples_differ_per_discriminator() {
        assert_ne!(jitter_sample(1, b"a"), jitter_sample(1, b"b"));
        assert_eq!(jitter_sample(1, b"a"), jitter_sample(1, b"a"));
    }
}
