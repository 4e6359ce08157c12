//! Request rate limits, enforced with GCRA (the `governor` crate) on the
//! engine's clock: one per API key (per-tenant overrides aside, the same
//! rate for every key), and one per client address on failed
//! authentications. Both live in this node's memory: on PostgreSQL each
//! node enforces them on the requests it serves.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use steadfast_core::KeyId;

use crate::clock::Clock;

/// A sustained rate and the burst above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Rate {
    pub fn new(per_second: u32, burst: u32) -> Option<Rate> {
        Some(Rate {
            per_second: NonZeroU32::new(per_second)?,
            burst: NonZeroU32::new(burst)?,
        })
    }

    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }

    /// Time to earn back the whole burst: the window of `RateLimit-Policy`.
    fn window(self) -> Duration {
        Duration::from_secs_f64(f64::from(self.burst.get()) / f64::from(self.per_second.get()))
    }
}

/// Bounds on abusive traffic (docs/limits.md).
#[derive(Debug, Clone, Copy)]
pub struct AbuseLimits {
    /// Requests per API key, unless its tenant has its own.
    pub key_rate: Rate,
    /// Failed authentications per client address.
    pub auth_failure_rate: Rate,
    /// How often failed authentications are written to the audit log: one
    /// record per key (and one for all unknown keys) per interval.
    pub auth_failure_record_every: Duration,
}

impl Default for AbuseLimits {
    fn default() -> Self {
        AbuseLimits {
            key_rate: Rate::new(1000, 2000).expect("non-zero"),
            auth_failure_rate: Rate::new(10, 100).expect("non-zero"),
            auth_failure_record_every: Duration::from_secs(60),
        }
    }
}

/// What a limit answered, for the `RateLimit-Policy` and `RateLimit`
/// headers (draft-ietf-httpapi-ratelimit-headers) and `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub policy: &'static str,
    pub rate: Rate,
    /// Requests left in the burst.
    pub remaining: u32,
    /// Until the burst is whole again (allowed), or until a request will be
    /// allowed (limited).
    pub reset: Duration,
    pub limited: bool,
}

impl Admission {
    /// `RateLimit-Policy`: the burst, over the time it takes to earn it back.
    pub fn policy_header(&self) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.policy,
            self.rate.burst,
            self.rate.window().as_secs().max(1)
        )
    }

    /// `RateLimit`: what is left, and when it resets (whole seconds, rounded up).
    pub fn state_header(&self) -> String {
        format!("\"{}\";r={};t={}", self.policy, self.remaining, ceil_secs(self.reset))
    }

    /// `Retry-After`, in whole seconds (at least 1).
    pub fn retry_after(&self) -> u64 {
        ceil_secs(self.reset).max(1)
    }
}

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// The engine's clock as governor's: its monotonic [`Clock::elapsed`], so a
/// wall clock stepped back does not hold every key at its limit.
#[derive(Clone)]
struct EngineClock(Arc<dyn Clock>);

impl std::fmt::Debug for EngineClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineClock")
    }
}

impl governor::clock::Clock for EngineClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

type Limiter<K> = RateLimiter<K, DashMapStateStore<K>, EngineClock, StateInformationMiddleware>;

fn limiter<K: Hash + Eq + Clone>(rate: Rate, clock: &EngineClock) -> Limiter<K> {
    RateLimiter::dashmap_with_clock(rate.quota(), clock.clone()).with_middleware::<StateInformationMiddleware>()
}

/// Past this many failing addresses tracked, those whose burst is whole
/// again are forgotten at once rather than at the next upkeep.
const FAILING_ADDRESSES_BOUND: usize = 100_000;

/// The address a client is limited by: itself for IPv4 (also when a
/// dual-stack listener shows it as `::ffff:a.b.c.d`), its /64 for IPv6.
fn network_of(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// This node's limiters.
pub(super) struct Limiters {
    clock: EngineClock,
    /// One limiter per rate in use: the default and each tenant override.
    keys: Mutex<HashMap<Rate, Arc<Limiter<KeyId>>>>,
    failures: Limiter<IpAddr>,
    failure_rate: Rate,
    /// Webhook deliveries per source (one rate for all sources).
    sources: Limiter<String>,
    source_rate: Rate,
    /// When idle failing addresses were last forgotten (ms of the clock's elapsed time).
    failures_forgotten_at: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters").finish_non_exhaustive()
    }
}

impl Limiters {
    pub(super) fn new(clock: Arc<dyn Clock>, limits: &AbuseLimits, source_rate: Rate) -> Limiters {
        let clock = EngineClock(clock);
        Limiters {
            failures: limiter(limits.auth_failure_rate, &clock),
            failure_rate: limits.auth_failure_rate,
            failures_forgotten_at: std::sync::atomic::AtomicU64::new(0),
            keys: Mutex::default(),
            sources: limiter(source_rate, &clock),
            source_rate,
            clock,
        }
    }

    /// Counts one request by `key` against `rate`.
    pub(super) fn admit_key(&self, key: &KeyId, rate: Rate) -> Admission {
        let limiter = self
            .keys
            .lock()
            .expect("the limiter map is never poisoned")
            .entry(rate)
            .or_insert_with(|| Arc::new(limiter(rate, &self.clock)))
            .clone();
        admit(&limiter, key, "key", rate, &self.clock)
    }

    /// Counts one webhook delivery to source `id`.
    pub(super) fn admit_source(&self, id: &str) -> Admission {
        admit(&self.sources, &id.to_owned(), "source", self.source_rate, &self.clock)
    }

    /// Counts one failed authentication from `client` (an IPv6 client by
    /// its /64: one host usually holds the whole prefix).
    pub(super) fn admit_failure(&self, client: IpAddr) -> Admission {
        if self.failures.len() >= FAILING_ADDRESSES_BOUND {
            self.forget_idle_failures_now_and_then();
        }
        admit(
            &self.failures,
            &network_of(client),
            "auth-failures",
            self.failure_rate,
            &self.clock,
        )
    }

    /// Forgets idle failing addresses, at most once a second: under a
    /// spread-out attack every failure would otherwise walk the whole map.
    fn forget_idle_failures_now_and_then(&self) {
        let now = self.clock.0.elapsed().as_millis() as u64;
        let last = self.failures_forgotten_at.load(std::sync::atomic::Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .failures_forgotten_at
                .compare_exchange(
                    last,
                    now,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_ok()
        {
            self.failures.retain_recent();
        }
    }

    /// Forgets keys and addresses whose bursts are whole again, so memory
    /// follows recent traffic, not every address ever seen.
    pub(super) fn forget_idle(&self) {
        self.failures.retain_recent();
        self.failures.shrink_to_fit();
        for limiter in self.keys.lock().expect("the limiter map is never poisoned").values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.sources.retain_recent();
        self.sources.shrink_to_fit();
    }
}

fn admit<K: Hash + Eq + Clone>(
    limiter: &Limiter<K>,
    key: &K,
    policy: &'static str,
    rate: Rate,
    clock: &EngineClock,
) -> Admission {
    use governor::clock::Clock as _;
    match limiter.check_key(key) {
        Ok(snapshot) => {
            let remaining = snapshot.remaining_burst_capacity();
            let missing = rate.burst.get().saturating_sub(remaining);
            Admission {
                policy,
                rate,
                remaining,
                reset: Duration::from_secs_f64(f64::from(missing) / f64::from(rate.per_second.get())),
                limited: false,
            }
        }
        Err(not_until) => Admission {
            policy,
            rate,
            remaining: 0,
            reset: not_until.wait_time_from(clock.now()),
            limited: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    #[test]
    fn an_ipv6_client_is_limited_by_its_64() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let same: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(network_of(one), network_of(same));
        assert_ne!(network_of(one), network_of(other));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(network_of(v4), v4);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(network_of(mapped), v4, "a dual-stack listener's IPv4 client is itself");
        let another: IpAddr = "::ffff:192.0.2.8".parse().unwrap();
        assert_ne!(network_of(mapped), network_of(another));
    }

    #[test]
    fn a_key_gets_its_burst_then_its_rate_on_the_engines_clock() {
        let clock = Arc::new(ManualClock::new(jiff::Timestamp::from_second(1_800_000_000).unwrap()));
        let limiters = Limiters::new(clock.clone(), &AbuseLimits::default(), Rate::new(1, 1).unwrap());
        let rate = Rate::new(2, 3).unwrap();
        let key = KeyId::from_random([1; 8]);
        let other = KeyId::from_random([2; 8]);
        let answers: Vec<bool> = (0..4).map(|_| limiters.admit_key(&key, rate).limited).collect();
        assert_eq!(answers, [false, false, false, true]);
        assert!(!limiters.admit_key(&other, rate).limited, "keys are limited apart");

        let limited = limiters.admit_key(&key, rate);
        assert_eq!((limited.remaining, limited.retry_after()), (0, 1));
        assert_eq!(limited.policy_header(), "\"key\";q=3;w=1");
        clock.advance(Duration::from_millis(500));
        let allowed = limiters.admit_key(&key, rate);
        assert!(!allowed.limited, "half a second earns one request at 2/s");
        assert_eq!(allowed.state_header(), "\"key\";r=0;t=2");
    }
}
