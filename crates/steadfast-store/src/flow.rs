//! Flow control: the rules a queue's leases obey (its policy), and what
//! those rules remember from one lease to the next (its flow state).
//!
//! The policy is stored as JSON in the form of [`QueuePolicy`]; the API has
//! its own wire types. Every rule is enforced when a lease is granted, by
//! [`crate::decide::lease`], the same on every backend.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use steadfast_core::{FlowKey, QueueName, ResourceName, Timestamp};

use crate::{StoreError, TenantScope};

/// The most keys a policy may give their own fairness weight.
pub const MAX_WEIGHTS: usize = 1000;
/// The highest fairness weight; a key's weight is how many leases it gets per turn.
pub const MAX_WEIGHT: u32 = 100;
/// The highest concurrency a rule may allow.
pub const MAX_CONCURRENCY: u32 = 1_000_000;
/// The most grants a rate may allow per period, and the largest burst.
pub const MAX_RATE_LIMIT: u32 = 1_000_000;
/// The longest rate period: one day.
pub const MAX_RATE_PERIOD_MS: u64 = 86_400_000;
/// The highest retry budget ratio (retries per first attempt).
pub const MAX_BUDGET_RATIO: f64 = 100.0;
/// The highest reserve of retries per second a retry budget may keep.
pub const MAX_BUDGET_MIN_PER_SEC: f64 = 100_000.0;

/// Grants per period, enforced with GCRA: at most `burst` at once, and
/// `limit` per `period_ms` on average.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub limit: u32,
    pub period_ms: u64,
    pub burst: u32,
}

/// The longest a full burst of any rate may take to earn back: 30 days.
pub const MAX_RATE_HORIZON: Duration = Duration::from_secs(30 * 86_400);

impl Rate {
    /// Checks every bound of a rate named `field`; the error is safe to show.
    pub fn check(&self, field: &str) -> Result<(), String> {
        let within = |part: &str, value: u64, max: u64| {
            if (1..=max).contains(&value) {
                Ok(())
            } else {
                Err(format!("{field}.{part}: must be between 1 and {max}"))
            }
        };
        within("limit", self.limit.into(), MAX_RATE_LIMIT.into())?;
        within("period_ms", self.period_ms, MAX_RATE_PERIOD_MS)?;
        within("burst", self.burst.into(), MAX_RATE_LIMIT.into())?;
        // GCRA's tolerance is the interval times the burst: kept within a
        // month, it never overflows (and a month of burst is no rate).
        let horizon = self
            .emission_interval()
            .as_nanos()
            .saturating_mul(u128::from(self.burst));
        if horizon > MAX_RATE_HORIZON.as_nanos() {
            return Err(format!(
                "{field}: burst x period_ms / limit must be at most {} days",
                MAX_RATE_HORIZON.as_secs() / 86_400
            ));
        }
        Ok(())
    }

    /// The time between two grants at the steady rate.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos((self.period_ms.saturating_mul(1_000_000) / u64::from(self.limit.max(1))).max(1))
    }
}

/// How a queue shares its leases between the keys of its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fairness {
    /// Keys take turns (deficit round robin, one lease per unit of weight).
    FlowKey,
}

/// Retries may be at most `ratio` times the first attempts, plus a reserve
/// of `min_per_sec`. A retry over the budget waits (it is deferred, not failed).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    pub ratio: f64,
    pub min_per_sec: f64,
}

/// A queue's rules. The default has none: leases go in priority, then
/// `run_at`, then FIFO order, as fast as workers ask.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuePolicy {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Running jobs of the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Running jobs per `flow_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_concurrency: Option<u32>,
    /// Lease grants of the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// Lease grants per `flow_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fairness: Option<Fairness>,
    /// Fairness weights of particular keys; the others weigh 1.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

impl QueuePolicy {
    /// Whether this policy has no rule at all (a queue without a policy).
    pub fn is_empty(&self) -> bool {
        *self == QueuePolicy::default()
    }

    /// Whether leases must look at the keys of jobs: they are served key by
    /// key, in turns, so one key's backlog never blocks another's jobs.
    pub fn by_key(&self) -> bool {
        self.key_concurrency.is_some() || self.key_rate.is_some() || self.fairness.is_some()
    }

    /// Whether a lease must remember something for the next one, or count
    /// running jobs: on a shared database, nodes then take turns.
    pub fn needs_turns(&self) -> bool {
        self.concurrency.is_some() || self.rate.is_some() || self.retry_budget.is_some() || self.by_key()
    }

    /// How many leases `key` gets per turn.
    pub fn weight(&self, key: &str) -> u32 {
        self.weights.get(key).copied().unwrap_or(1).max(1)
    }

    /// Checks every bound; the error names the field and is safe to show.
    pub fn validate(&self) -> Result<(), String> {
        let within = |field: &str, value: u64, max: u64| {
            if (1..=max).contains(&value) {
                Ok(())
            } else {
                Err(format!("{field}: must be between 1 and {max}"))
            }
        };
        if let Some(n) = self.concurrency {
            within("concurrency", n.into(), MAX_CONCURRENCY.into())?;
        }
        if let Some(n) = self.key_concurrency {
            within("key_concurrency", n.into(), MAX_CONCURRENCY.into())?;
        }
        for (field, rate) in [("rate", &self.rate), ("key_rate", &self.key_rate)] {
            if let Some(rate) = rate {
                rate.check(field)?;
            }
        }
        if !self.weights.is_empty() && self.fairness.is_none() {
            return Err("weights: only mean something with fairness".into());
        }
        if self.weights.len() > MAX_WEIGHTS {
            return Err(format!("weights: at most {MAX_WEIGHTS} keys"));
        }
        for (key, weight) in &self.weights {
            FlowKey::new(key.as_str()).map_err(|e| format!("weights: {e}"))?;
            within("weights", (*weight).into(), MAX_WEIGHT.into())?;
        }
        if let Some(budget) = self.retry_budget {
            if !(budget.ratio.is_finite() && (0.0..=MAX_BUDGET_RATIO).contains(&budget.ratio)) {
                return Err(format!("retry_budget.ratio: must be between 0 and {MAX_BUDGET_RATIO}"));
            }
            if !(budget.min_per_sec.is_finite() && (0.0..=MAX_BUDGET_MIN_PER_SEC).contains(&budget.min_per_sec)) {
                return Err(format!(
                    "retry_budget.min_per_sec: must be between 0 and {MAX_BUDGET_MIN_PER_SEC}"
                ));
            }
        }
        Ok(())
    }

    /// The stored form, or `None` for a policy without rules.
    pub fn to_column(&self) -> Option<String> {
        (!self.is_empty()).then(|| serde_json::to_string(self).expect("a policy serializes"))
    }

    /// The inverse of [`QueuePolicy::to_column`].
    pub fn from_column(text: Option<&str>) -> Result<QueuePolicy, StoreError> {
        match text {
            None => Ok(QueuePolicy::default()),
            Some(text) => {
                serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("stored queue policy: {e}")))
            }
        }
    }
}

/// A change to a policy: an absent field stays as it is, `Some(None)`
/// removes the rule, `Some(Some(value))` sets it (a JSON merge patch).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicyPatch {
    pub paused: Option<bool>,
    pub concurrency: Option<Option<u32>>,
    pub key_concurrency: Option<Option<u32>>,
    pub rate: Option<Option<Rate>>,
    pub key_rate: Option<Option<Rate>>,
    pub fairness: Option<Option<Fairness>>,
    /// Replaces every weight.
    pub weights: Option<BTreeMap<String, u32>>,
    pub retry_budget: Option<Option<RetryBudget>>,
}

impl PolicyPatch {
    pub fn apply(self, mut policy: QueuePolicy) -> QueuePolicy {
        fn set<T>(field: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *field = value;
            }
        }
        set(&mut policy.paused, self.paused);
        set(&mut policy.concurrency, self.concurrency);
        set(&mut policy.key_concurrency, self.key_concurrency);
        set(&mut policy.rate, self.rate);
        set(&mut policy.key_rate, self.key_rate);
        set(&mut policy.fairness, self.fairness);
        set(&mut policy.weights, self.weights);
        set(&mut policy.retry_budget, self.retry_budget);
        policy
    }
}

/// Where the fairness rotation stands: the key being served (`""` for the
/// jobs without a key) and how many leases it had in this turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub key: String,
    pub served: u32,
}

/// What a queue's rules remember between leases.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueueFlowState {
    /// The queue rate's theoretical arrival time, in Unix nanoseconds.
    pub rate_tat_ns: Option<i64>,
    pub cursor: Option<Cursor>,
    /// The retry budget's balance and when it was computed.
    pub budget: Option<(f64, Timestamp)>,
}

/// A queue's policy and flow state, as a lease loads them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueueFlow {
    pub policy: QueuePolicy,
    pub state: QueueFlowState,
}

/// The most a resource's breaker window, open time or probes may be.
pub const MAX_BREAKER_WINDOW_SECS: u32 = 86_400;
pub const MAX_BREAKER_OPEN_SECS: u32 = 86_400;
pub const MAX_HALF_OPEN_PROBES: u32 = 1000;
pub const MAX_BREAKER_MIN_REQUESTS: u32 = 1_000_000;

/// A circuit breaker: it opens when, within a window, at least
/// `min_requests` outcomes were reported and at least `failure_ratio` of
/// them failed; stays open `open_secs`; then lets `half_open_probes`
/// leases through, and the first of their outcomes closes or reopens it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    pub failure_ratio: f64,
    pub min_requests: u32,
    pub window_secs: u32,
    pub open_secs: u32,
    pub half_open_probes: u32,
}

/// What a downstream allows: a breaker, and limits over every queue.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<Breaker>,
    /// Running jobs of the resource, over all queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Lease grants of the resource's jobs, over all queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
}

impl ResourceConfig {
    /// Checks every bound; the error names the field and is safe to show.
    pub fn validate(&self) -> Result<(), String> {
        let within = |field: &str, value: u32, min: u32, max: u32| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(format!("{field}: must be between {min} and {max}"))
            }
        };
        if let Some(breaker) = &self.breaker {
            if !(breaker.failure_ratio.is_finite() && breaker.failure_ratio > 0.0 && breaker.failure_ratio <= 1.0) {
                return Err("breaker.failure_ratio: must be above 0 and at most 1".into());
            }
            within(
                "breaker.min_requests",
                breaker.min_requests,
                1,
                MAX_BREAKER_MIN_REQUESTS,
            )?;
            within("breaker.window_secs", breaker.window_secs, 1, MAX_BREAKER_WINDOW_SECS)?;
            within("breaker.open_secs", breaker.open_secs, 1, MAX_BREAKER_OPEN_SECS)?;
            within(
                "breaker.half_open_probes",
                breaker.half_open_probes,
                1,
                MAX_HALF_OPEN_PROBES,
            )?;
        }
        if let Some(n) = self.concurrency {
            within("concurrency", n, 1, MAX_CONCURRENCY)?;
        }
        if let Some(rate) = &self.rate {
            rate.check("rate")?;
        }
        Ok(())
    }

    pub fn to_column(&self) -> String {
        serde_json::to_string(self).expect("a resource config serializes")
    }

    pub fn from_column(text: &str) -> Result<ResourceConfig, StoreError> {
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("stored resource config: {e}")))
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Leases go through; outcomes are counted in the window.
    Closed,
    /// No lease of the resource's jobs, until `opened_at + open_secs`.
    Open,
    /// `half_open_probes` leases go through; their first outcome decides.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    pub fn parse(text: &str) -> Result<BreakerState, StoreError> {
        [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen]
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| StoreError::Corrupt(format!("breaker state {text:?}")))
    }
}

/// What a resource's rules remember.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceState {
    pub breaker: BreakerState,
    pub window_started_at: Timestamp,
    pub window_requests: u32,
    pub window_failures: u32,
    pub opened_at: Option<Timestamp>,
    /// Leases granted since the breaker went half-open, not yet reported.
    pub probes_granted: u32,
    /// The resource rate's theoretical arrival time, Unix nanoseconds.
    pub rate_tat_ns: Option<i64>,
}

impl ResourceState {
    /// A new resource's: closed, with an empty window from `now`.
    pub fn fresh(now: Timestamp) -> ResourceState {
        ResourceState {
            breaker: BreakerState::Closed,
            window_started_at: now,
            window_requests: 0,
            window_failures: 0,
            opened_at: None,
            probes_granted: 0,
            rate_tat_ns: None,
        }
    }
}

/// A downstream that jobs name as their `resource`.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub name: ResourceName,
    pub config: ResourceConfig,
    pub state: ResourceState,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Why ready jobs are not leased, counted per reason. A job held for
/// several reasons counts under the first: paused, breaker_open,
/// concurrency, key_concurrency, rate, retry_budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Held {
    pub paused: u64,
    pub concurrency: u64,
    pub key_concurrency: u64,
    pub rate: u64,
    pub breaker_open: u64,
    pub retry_budget: u64,
}

impl Held {
    /// Every reason with its count, in the order above.
    pub fn reasons(&self) -> [(&'static str, u64); 6] {
        [
            ("paused", self.paused),
            ("breaker_open", self.breaker_open),
            ("concurrency", self.concurrency),
            ("key_concurrency", self.key_concurrency),
            ("rate", self.rate),
            ("retry_budget", self.retry_budget),
        ]
    }
}

/// Counts a backend reads for [`crate::decide::flow::held`]: the queue's
/// ready jobs, and those of them that each rule's targets hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadyCounts {
    pub queued: u64,
    pub running: u64,
    /// Ready jobs whose resource's breaker holds them.
    pub of_blocked_resources: u64,
    /// Ready jobs whose key is at `key_concurrency`.
    pub of_saturated_keys: u64,
    /// Ready jobs whose key's rate admits none now.
    pub of_rate_held_keys: u64,
    /// Ready jobs whose next attempt is a retry.
    pub retries: u64,
}

/// A queue as `GET /v1/queues` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueOverview {
    pub queue: QueueName,
    pub policy: QueuePolicy,
    /// Unfinished jobs by state (scheduled, queued, running, waiting).
    pub counts: Vec<(steadfast_core::JobState, u64)>,
    /// Running jobs of the busiest keys, most first (at most ten).
    pub busiest_keys: Vec<(String, u64)>,
    pub held: Held,
}

/// The most queues `GET /v1/queues` lists, and keys it shows per queue.
pub const MAX_LISTED_QUEUES: usize = 1000;
pub const BUSIEST_KEYS: usize = 10;

/// Queue policies, always within one tenant.
#[async_trait]
pub trait FlowStore {
    /// Applies `patch` to the queue's policy (audited as `queue.policy_set`
    /// with both versions) and returns the new policy. `Invalid` when the
    /// result breaks a bound.
    async fn set_queue_policy(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        patch: PolicyPatch,
        now: Timestamp,
    ) -> Result<QueuePolicy, StoreError>;

    /// The queue's policy (the default, with no rules, when it has none).
    async fn queue_policy(&self, scope: &TenantScope, queue: &QueueName) -> Result<QueuePolicy, StoreError>;

    /// Creates the resource or replaces its configuration (audited as
    /// `resource.set`); its breaker state is kept. `Invalid` when the
    /// config breaks a bound.
    async fn put_resource(
        &self,
        scope: &TenantScope,
        name: &ResourceName,
        config: ResourceConfig,
        now: Timestamp,
    ) -> Result<Resource, StoreError>;

    /// The resource, its breaker brought up to `now` (an open breaker whose
    /// time is up reads half-open).
    async fn resource(
        &self,
        scope: &TenantScope,
        name: &ResourceName,
        now: Timestamp,
    ) -> Result<Option<Resource>, StoreError>;

    /// The tenant's queues (those with unfinished jobs or a policy, by name,
    /// at most [`MAX_LISTED_QUEUES`]) with their policy and live state.
    async fn queue_overviews(&self, scope: &TenantScope, now: Timestamp) -> Result<Vec<QueueOverview>, StoreError>;

    /// Every resource of the tenant, by name, at `now`.
    async fn resources(&self, scope: &TenantScope, now: Timestamp) -> Result<Vec<Resource>, StoreError>;

    /// Removes the resource (audited as `resource.deleted`); its jobs run
    /// unheld. `NotFound` if there is none.
    async fn delete_resource(&self, scope: &TenantScope, name: &ResourceName, now: Timestamp)
    -> Result<(), StoreError>;
}
