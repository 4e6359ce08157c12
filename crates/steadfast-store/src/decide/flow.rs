//! Flow control at lease time: which of a queue's ready jobs a lease may
//! take under the queue's policy, and what the policy's rules remember
//! afterwards. One function for every backend; each loads what
//! [`Loading`] asks for, inside the lease's transaction, and writes the
//! [`FlowWrite`]s it gets back in the same transaction.
//!
//! Within one lease the rules only ever get stricter (running counts grow,
//! rate limiters' arrival times move forward), so a job or key found held
//! once stays held for the rest of that lease. The one exception is the
//! retry budget, which first attempts refill; a retry deferred early in a
//! lease is not reconsidered in it.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
use steadfast_core::lifecycle;
use steadfast_core::{Attempt, AttemptOutcome, Job, JobState, QueueName, ResourceName, TenantId, Timestamp};

use super::Writes;
use crate::flow::{
    Breaker, BreakerState, Cursor, Held, QueueFlow, QueueFlowState, QueuePolicy, Rate, ReadyCounts, Resource,
    ResourceConfig, ResourceState, RetryBudget,
};
use crate::{PolicyPatch, StoreError};

/// The retry budget forgets deposits with this time constant, as Finagle's
/// RetryBudget forgets them after its TTL; the reserve holds this many
/// seconds of `min_per_sec`.
const BUDGET_MEMORY_SECS: f64 = 10.0;
/// The shortest and longest a retry over budget is deferred.
const MIN_DEFER: Duration = Duration::from_millis(100);
const MAX_DEFER: Duration = Duration::from_secs(10);
/// How soon a worker waiting on a queue that concurrency held back asks
/// again, when no finished job on its own node wakes it first (a slot freed
/// on another node).
const CONCURRENCY_RECHECK: Duration = Duration::from_secs(1);
/// The most keys one lease looks at, and the fewest.
const MAX_KEYS_PER_LEASE: u32 = 128;
const MIN_KEYS_PER_LEASE: u32 = 8;

/// Ready jobs per key, in rotation order, each key's jobs in lease order
/// with their insertion sequence. `""` holds the jobs without a key.
pub type KeyedJobs = Vec<(String, Vec<(i64, Job)>)>;

/// A resource as it reads at `now` (its breaker brought up to date).
pub fn resource_at(resource: Resource, now: Timestamp) -> Resource {
    let state = breaker_at(&resource.config, &resource.state, now);
    Resource { state, ..resource }
}

/// The ready jobs a lease chooses from, as the backend loaded them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidates {
    /// The queue's heads in lease order (priority, `run_at`, FIFO), each
    /// with its insertion sequence.
    Ordered(Vec<(i64, Job)>),
    /// Per key, in rotation order from the cursor's key on (wrapping), each
    /// key's jobs in lease order. `""` holds the jobs without a key.
    ByKey(KeyedJobs),
}

impl Candidates {
    /// Every candidate job.
    pub fn jobs(&self) -> Box<dyn Iterator<Item = &Job> + '_> {
        match self {
            Candidates::Ordered(heads) => Box::new(heads.iter().map(|(_, job)| job)),
            Candidates::ByKey(keys) => Box::new(keys.iter().flat_map(|(_, jobs)| jobs.iter().map(|(_, job)| job))),
        }
    }
}

/// Everything a lease of one queue decides from.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueLease {
    pub queue: QueueName,
    pub flow: QueueFlow,
    /// Running jobs of the queue (loaded when the policy has `concurrency`).
    pub running: u32,
    /// Running jobs per key, for the candidates' keys (with `key_concurrency`).
    pub key_running: HashMap<String, u32>,
    /// Each candidate key's rate limiter arrival time, where one is stored (with `key_rate`).
    pub key_tats: HashMap<String, i64>,
    pub candidates: Candidates,
}

/// What a backend must load for a lease of a queue with `policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loading {
    /// Nodes take turns: on a shared database, hold the queue's settings row.
    pub turns: bool,
    /// Count the queue's running jobs.
    pub running: bool,
    /// Load candidates key by key ([`Candidates::ByKey`]), at most this many keys.
    pub keys: Option<u32>,
    /// Count running jobs per candidate key.
    pub key_running: bool,
    /// Load the candidate keys' rate limiter states.
    pub key_rates: bool,
}

/// What to load for a lease of up to `max_jobs` from a queue with `policy`.
pub fn loading(policy: &QueuePolicy, max_jobs: u32) -> Loading {
    Loading {
        turns: policy.needs_turns(),
        running: policy.concurrency.is_some(),
        keys: policy
            .by_key()
            .then(|| max_jobs.clamp(MIN_KEYS_PER_LEASE, MAX_KEYS_PER_LEASE)),
        key_running: policy.key_concurrency.is_some(),
        key_rates: policy.key_rate.is_some(),
    }
}

/// How many of a key's jobs to load when `keys` keys were found, for a
/// lease of up to `max_jobs`: its share of the lease times its weight,
/// never more than its concurrency allows or the lease takes.
pub fn jobs_per_key(policy: &QueuePolicy, key: &str, keys: usize, max_jobs: u32) -> u32 {
    let share = max_jobs.div_ceil(keys.max(1) as u32).max(1);
    let wanted = share.saturating_mul(policy.weight(key));
    let cap = match (key.is_empty(), policy.key_concurrency) {
        (false, Some(limit)) => limit.min(max_jobs),
        _ => max_jobs,
    };
    wanted.min(cap).max(1)
}

/// The keys a lease visits, in turn order: from the cursor's key (`start`)
/// on, then round again from the start up to it. `""` (the jobs without a
/// key, present when `unkeyed`) opens each round. `from_start` are the
/// ready keys at or after `start`, `before_start` those before it (both
/// in key order, as the backend's index yields them).
pub fn rotation(
    start: &str,
    unkeyed: bool,
    from_start: Vec<String>,
    before_start: Vec<String>,
    max_keys: u32,
) -> Vec<String> {
    let unkeyed = unkeyed.then(String::new);
    let keys: Vec<String> = if start.is_empty() {
        unkeyed.into_iter().chain(from_start).collect()
    } else {
        from_start.into_iter().chain(unkeyed).chain(before_start).collect()
    };
    keys.into_iter().take(max_keys as usize).collect()
}

/// The resources the candidates of `leases` name, each once, in name
/// order (the order a backend locks them in).
pub fn candidate_resources(leases: &[QueueLease]) -> Vec<&str> {
    let mut names: Vec<&str> = leases
        .iter()
        .flat_map(|lease| lease.candidates.jobs())
        .filter_map(|job| job.resource.as_ref().map(ResourceName::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Unfinished jobs counted per (queue, state), as a backend reads them.
pub type StateCounts = Vec<(String, String, i64)>;

/// The queues `GET /v1/queues` lists: those with unfinished jobs or a
/// policy, by name, at most [`crate::flow::MAX_LISTED_QUEUES`].
pub fn listed_queues<'a>(counts: &StateCounts, with_policy: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut names: Vec<String> = counts
        .iter()
        .map(|(queue, _, _)| queue.clone())
        .chain(with_policy.cloned())
        .collect();
    names.sort();
    names.dedup();
    names.truncate(crate::flow::MAX_LISTED_QUEUES);
    names
}

/// `queue`'s unfinished jobs in `state`.
pub fn count_of(counts: &StateCounts, queue: &str, state: JobState) -> u64 {
    counts
        .iter()
        .filter(|(q, s, _)| q == queue && s == state.as_str())
        .map(|(_, _, n)| (*n).max(0) as u64)
        .sum()
}

/// `queue`'s unfinished jobs by state, as an overview shows them.
pub fn unfinished_counts(counts: &StateCounts, queue: &str) -> Vec<(JobState, u64)> {
    [
        JobState::Scheduled,
        JobState::Queued,
        JobState::Running,
        JobState::Waiting,
    ]
    .into_iter()
    .map(|state| (state, count_of(counts, queue, state)))
    .collect()
}

/// A change to flow state that a lease writes.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowWrite {
    /// The queue's state after the lease.
    Queue {
        tenant_id: TenantId,
        queue: QueueName,
        state: QueueFlowState,
    },
    /// A key's rate limiter after the lease.
    KeyRate {
        tenant_id: TenantId,
        queue: QueueName,
        key: String,
        tat_ns: i64,
    },
    /// A resource's breaker and limiter, after a lease or a reported outcome.
    Resource {
        tenant_id: TenantId,
        name: ResourceName,
        state: ResourceState,
    },
}

impl FlowWrite {
    pub fn tenant_id(&self) -> TenantId {
        match self {
            FlowWrite::Queue { tenant_id, .. }
            | FlowWrite::KeyRate { tenant_id, .. }
            | FlowWrite::Resource { tenant_id, .. } => *tenant_id,
        }
    }
}

/// The jobs a lease granted, in lease order, and the retries it deferred.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Admitted {
    pub jobs: Vec<Job>,
    /// Retries the queue's retry budget sent back to `scheduled`, per queue.
    pub deferred: Vec<(QueueName, u32)>,
    /// When a rate limit that held jobs back next admits one: a waiting
    /// worker should ask again then.
    pub retry_at: Option<Timestamp>,
}

/// A resource the candidates name, as a lease loads it: its running jobs
/// are counted when it has a concurrency limit.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceLease {
    pub resource: Resource,
    pub running: u32,
}

/// Chooses the jobs a lease of up to `max_jobs` takes from `queues`: each
/// queue's next admissible job, the best first (priority, then `run_at`,
/// then FIFO), until the lease is full or no queue admits another. A job
/// whose resource holds it (breaker open, probes taken, concurrency,
/// rate) stays queued. Retries over their queue's budget are deferred
/// (written as changed jobs).
pub fn admit(
    tenant: TenantId,
    queues: Vec<QueueLease>,
    resources: Vec<ResourceLease>,
    reopens_at: Option<Timestamp>,
    max_jobs: u32,
    now: Timestamp,
) -> (Admitted, Writes) {
    let mut admissions: Vec<Admission> = queues.into_iter().map(|lease| Admission::new(lease, now)).collect();
    let mut gates = Gates::new(resources, now);
    if let Some(at) = reopens_at {
        gates.later(unix_nanos(at));
    }
    let mut admitted = Admitted::default();
    while admitted.jobs.len() < max_jobs as usize {
        let best = admissions
            .iter_mut()
            .enumerate()
            .filter_map(|(index, admission)| {
                admission
                    .peek(now, &mut gates)
                    .map(|(seq, job)| (index, (*seq, job.clone())))
            })
            .min_by(|(_, (seq_a, a)), (_, (seq_b, b))| {
                b.priority
                    .cmp(&a.priority)
                    .then(a.run_at.cmp(&b.run_at))
                    .then(seq_a.cmp(seq_b))
            });
        let Some((index, _)) = best else { break };
        let job = admissions[index].take(now);
        gates.take(&job, now);
        admitted.jobs.push(job);
    }
    let mut writes = Writes::default();
    for admission in admissions {
        admission.finish(tenant, now, &mut admitted, &mut writes);
    }
    gates.finish(tenant, &mut admitted, &mut writes);
    (admitted, writes)
}

/// The resources of one lease: what each still admits as the lease grants.
struct Gates {
    gates: HashMap<String, Gate>,
    retry_at_ns: Option<i64>,
}

struct Gate {
    name: ResourceName,
    config: ResourceConfig,
    state: ResourceState,
    before: ResourceState,
    running: u32,
}

impl Gates {
    fn new(resources: Vec<ResourceLease>, now: Timestamp) -> Gates {
        let gates = resources
            .into_iter()
            .map(|ResourceLease { resource, running }| {
                let state = breaker_at(&resource.config, &resource.state, now);
                let gate = Gate {
                    name: resource.name.clone(),
                    config: resource.config,
                    before: resource.state,
                    state,
                    running,
                };
                (resource.name.into_string(), gate)
            })
            .collect();
        Gates {
            gates,
            retry_at_ns: None,
        }
    }

    fn later(&mut self, at_ns: i64) {
        self.retry_at_ns = Some(self.retry_at_ns.map_or(at_ns, |earlier| earlier.min(at_ns)));
    }

    /// Whether `job`'s resource admits it now (a job without one, or whose
    /// resource is not configured, always passes).
    fn open(&mut self, job: &Job, now: Timestamp) -> bool {
        let Some(gate) = job.resource.as_ref().and_then(|name| self.gates.get(name.as_str())) else {
            return true;
        };
        let (config, state, running) = (&gate.config, &gate.state, gate.running);
        let mut wake = None;
        let open = match (state.breaker, &config.breaker) {
            (BreakerState::Open, Some(breaker)) => {
                wake = state
                    .opened_at
                    .and_then(|at| at.saturating_add(Duration::from_secs(breaker.open_secs.into())).ok())
                    .map(unix_nanos);
                false
            }
            (BreakerState::HalfOpen, Some(breaker)) => {
                let left = state.probes_granted < breaker.half_open_probes;
                if !left {
                    // Every probe is out: a probe's outcome, maybe on
                    // another node, decides what comes next.
                    wake = Some(unix_nanos(now).saturating_add(CONCURRENCY_RECHECK.as_nanos() as i64));
                }
                left
            }
            _ => true,
        } && match config.concurrency {
            Some(limit) if running >= limit => {
                wake = Some(unix_nanos(now).saturating_add(CONCURRENCY_RECHECK.as_nanos() as i64));
                false
            }
            _ => true,
        } && match &config.rate {
            Some(rate) => match gcra(rate, state.rate_tat_ns, now) {
                Ok(_) => true,
                Err(at) => {
                    wake = Some(at);
                    false
                }
            },
            None => true,
        };
        if let Some(at) = wake {
            self.later(at);
        }
        open
    }

    /// What granting `job` changes in its resource's state.
    fn take(&mut self, job: &Job, now: Timestamp) {
        let Some(gate) = job.resource.as_ref().and_then(|name| self.gates.get_mut(name.as_str())) else {
            return;
        };
        gate.running += 1;
        if gate.state.breaker == BreakerState::HalfOpen {
            gate.state.probes_granted += 1;
        }
        if let Some(rate) = &gate.config.rate {
            gate.state.rate_tat_ns = gcra(rate, gate.state.rate_tat_ns, now).ok().or(gate.state.rate_tat_ns);
        }
    }

    fn finish(self, tenant_id: TenantId, admitted: &mut Admitted, writes: &mut Writes) {
        if let Some(at) = self
            .retry_at_ns
            .and_then(|ns| Timestamp::from_nanosecond(ns.into()).ok())
        {
            admitted.retry_at = Some(admitted.retry_at.map_or(at, |earlier| earlier.min(at)));
        }
        let mut gates: Vec<Gate> = self.gates.into_values().collect();
        gates.sort_by(|a, b| a.name.cmp(&b.name));
        for gate in gates.into_iter().filter(|gate| gate.state != gate.before) {
            writes.flow.push(FlowWrite::Resource {
                tenant_id,
                name: gate.name,
                state: gate.state,
            });
        }
    }
}

/// The resources whose jobs no lease may take now (breaker open, or
/// half-open with every probe out; at their concurrency; over their rate):
/// a backend leaves their jobs out of the candidates it reads, so they do
/// not crowd out other jobs. `running` counts the running jobs of those
/// with a concurrency limit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Blocked {
    pub names: Vec<String>,
    /// The earliest an open one half-opens: a worker waiting then asks again.
    pub reopens_at: Option<Timestamp>,
}

pub fn blocked_resources(resources: &[Resource], running: &HashMap<String, u32>, now: Timestamp) -> Blocked {
    let mut blocked = Blocked::default();
    for resource in resources {
        let state = breaker_at(&resource.config, &resource.state, now);
        let by_breaker = match (&resource.config.breaker, state.breaker) {
            (Some(breaker), BreakerState::Open) => {
                if let Some(at) = half_opens_at(breaker, &state) {
                    blocked.reopens_at = Some(blocked.reopens_at.map_or(at, |earlier| earlier.min(at)));
                }
                true
            }
            (Some(breaker), BreakerState::HalfOpen) => state.probes_granted >= breaker.half_open_probes,
            _ => false,
        };
        let by_concurrency = resource
            .config
            .concurrency
            .is_some_and(|limit| running.get(resource.name.as_str()).copied().unwrap_or(0) >= limit);
        let by_rate = resource
            .config
            .rate
            .is_some_and(|rate| gcra(&rate, state.rate_tat_ns, now).is_err());
        if by_breaker || by_concurrency || by_rate {
            blocked.names.push(resource.name.to_string());
        }
    }
    blocked
}

/// The breaker brought up to `now`: an open breaker whose time is up is
/// half-open; a closed breaker's window that ended starts again empty.
pub fn breaker_at(config: &ResourceConfig, state: &ResourceState, now: Timestamp) -> ResourceState {
    let Some(breaker) = &config.breaker else {
        return state.clone();
    };
    let mut state = state.clone();
    let after = |at: Timestamp, secs: u32| {
        at.saturating_add(Duration::from_secs(secs.into()))
            .unwrap_or(Timestamp::MAX)
    };
    match state.breaker {
        BreakerState::Open if state.opened_at.is_none_or(|at| now >= after(at, breaker.open_secs)) => {
            state.breaker = BreakerState::HalfOpen;
            state.probes_granted = 0;
        }
        BreakerState::Closed if now >= after(state.window_started_at, breaker.window_secs) => {
            state.window_started_at = now;
            state.window_requests = 0;
            state.window_failures = 0;
        }
        _ => {}
    }
    state
}

/// What an ended attempt says about its downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The job succeeded: the downstream answered.
    Success,
    /// The downstream was unavailable, too slow, or refused for load.
    Failure,
    /// Says nothing about the downstream (a bug in the job, a lost worker,
    /// a cancel, a workflow that parked itself).
    Neutral,
}

/// The error kinds that count against a job's resource.
pub const FAILURE_KINDS: [&str; 3] = ["downstream_unavailable", "timeout", "rate_limited"];

pub fn outcome_of(attempt: &Attempt) -> Outcome {
    match attempt.outcome {
        AttemptOutcome::Succeeded => Outcome::Success,
        // The attempt ran past its deadline: the slow downstream of the
        // checkout story.
        AttemptOutcome::TimedOut => Outcome::Failure,
        AttemptOutcome::Failed
            if attempt
                .error
                .as_ref()
                .and_then(|error| error.kind.as_deref())
                .is_some_and(|kind| FAILURE_KINDS.contains(&kind)) =>
        {
            Outcome::Failure
        }
        _ => Outcome::Neutral,
    }
}

/// One ended attempt's report to its job's resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub tenant_id: TenantId,
    pub resource: ResourceName,
    pub outcome: Outcome,
    /// When the attempt's lease was granted: while the breaker is
    /// half-open, only attempts leased since it half-opened are probes.
    pub leased_at: Timestamp,
}

/// The outcomes `writes` report against resources: one per ended attempt
/// of a job that names a resource, in order.
pub fn resource_outcomes(writes: &Writes) -> Vec<Reported> {
    writes
        .attempts
        .iter()
        .filter_map(|ended| {
            let job = writes.changed_jobs.iter().find(|job| job.id == ended.job_id)?;
            Some(Reported {
                tenant_id: ended.tenant_id,
                resource: job.resource.clone()?,
                outcome: outcome_of(&ended.attempt),
                leased_at: ended.attempt.started_at,
            })
        })
        .collect()
}

/// The resources' states after `outcomes` (each resource loaded, or
/// absent when not configured): the writes for those that changed.
pub fn record_outcomes(resources: Vec<(TenantId, Resource)>, outcomes: &[Reported], now: Timestamp) -> Vec<FlowWrite> {
    let mut writes = Vec::new();
    for (tenant_id, resource) in resources {
        let Some(breaker) = &resource.config.breaker else {
            continue;
        };
        let mut state = breaker_at(&resource.config, &resource.state, now);
        for reported in outcomes
            .iter()
            .filter(|r| r.tenant_id == tenant_id && r.resource == resource.name)
        {
            state = after_outcome(breaker, state, reported, now);
        }
        if state != resource.state {
            writes.push(FlowWrite::Resource {
                tenant_id,
                name: resource.name,
                state,
            });
        }
    }
    writes
}

/// When an open breaker half-opens.
fn half_opens_at(breaker: &Breaker, state: &ResourceState) -> Option<Timestamp> {
    state.opened_at.map(|at| {
        at.saturating_add(Duration::from_secs(breaker.open_secs.into()))
            .unwrap_or(Timestamp::MAX)
    })
}

/// A breaker after one reported outcome. While half-open, only the
/// outcomes of probes (attempts leased since it half-opened) count: an
/// attempt leased before it opened says nothing about the downstream now.
fn after_outcome(breaker: &Breaker, mut state: ResourceState, reported: &Reported, now: Timestamp) -> ResourceState {
    let open = |mut state: ResourceState| {
        state.breaker = BreakerState::Open;
        state.opened_at = Some(now);
        state.probes_granted = 0;
        state
    };
    if state.breaker == BreakerState::HalfOpen
        && half_opens_at(breaker, &state).is_some_and(|since| reported.leased_at < since)
    {
        return state;
    }
    match (state.breaker, reported.outcome) {
        (BreakerState::HalfOpen, Outcome::Neutral) => {
            // A probe that says nothing frees its place for another.
            state.probes_granted = state.probes_granted.saturating_sub(1);
            state
        }
        (BreakerState::Closed, Outcome::Success | Outcome::Failure) => {
            state.window_requests = state.window_requests.saturating_add(1);
            if reported.outcome == Outcome::Failure {
                state.window_failures = state.window_failures.saturating_add(1);
            }
            let ratio = f64::from(state.window_failures) / f64::from(state.window_requests);
            if state.window_requests >= breaker.min_requests && ratio >= breaker.failure_ratio {
                open(state)
            } else {
                state
            }
        }
        (BreakerState::HalfOpen, Outcome::Success) => ResourceState {
            breaker: BreakerState::Closed,
            opened_at: None,
            probes_granted: 0,
            ..ResourceState::fresh(now).with_rate(state.rate_tat_ns)
        },
        (BreakerState::HalfOpen, Outcome::Failure) => open(state),
        // Open: outcomes of leases granted before it opened change nothing.
        _ => state,
    }
}

impl ResourceState {
    fn with_rate(mut self, rate_tat_ns: Option<i64>) -> ResourceState {
        self.rate_tat_ns = rate_tat_ns;
        self
    }
}

/// One queue's side of a lease: its candidates, and the rules' state as
/// this lease changes it.
struct Admission {
    queue: QueueName,
    policy: QueuePolicy,
    state: QueueFlowState,
    /// Running jobs, counting those this lease granted.
    running: u32,
    key_running: HashMap<String, u32>,
    key_tats: HashMap<String, i64>,
    /// Keys whose rate limiter this lease moved.
    moved_keys: Vec<String>,
    pending: Pending,
    /// The queue admits nothing more in this lease.
    closed: bool,
    deferred: Vec<Job>,
    /// The state as loaded, to write only what changed.
    state_before: QueueFlowState,
    /// The earliest a rate limit that held a job admits one, Unix nanoseconds.
    retry_at_ns: Option<i64>,
}

enum Pending {
    Ordered(VecDeque<(i64, Job)>),
    Rotation {
        keys: VecDeque<(String, VecDeque<(i64, Job)>)>,
        /// Leases the front key had in its current turn.
        served: u32,
        /// The last key that was at the front, for the cursor.
        last: Option<Cursor>,
    },
}

impl Admission {
    fn new(lease: QueueLease, now: Timestamp) -> Admission {
        let QueueLease {
            queue,
            flow: QueueFlow { policy, mut state },
            running,
            key_running,
            key_tats,
            candidates,
        } = lease;
        let state_before = state.clone();
        if let Some(budget) = &policy.retry_budget {
            state.budget = Some((balance(budget, state.budget, now), now));
        }
        let pending = match candidates {
            Candidates::Ordered(heads) => Pending::Ordered(heads.into()),
            Candidates::ByKey(keys) => {
                let served = match (&state.cursor, keys.first()) {
                    (Some(cursor), Some((first, _))) if &cursor.key == first => cursor.served,
                    _ => 0,
                };
                Pending::Rotation {
                    keys: keys.into_iter().map(|(key, jobs)| (key, jobs.into())).collect(),
                    served,
                    last: state.cursor.clone(),
                }
            }
        };
        Admission {
            closed: policy.paused,
            queue,
            policy,
            state,
            running,
            key_running,
            key_tats,
            moved_keys: Vec::new(),
            pending,
            deferred: Vec::new(),
            state_before,
            retry_at_ns: None,
        }
    }

    /// Whether the queue as a whole admits another lease now.
    fn queue_open(&mut self, now: Timestamp) -> bool {
        if self.policy.paused {
            return false;
        }
        if self.policy.concurrency.is_some_and(|limit| self.running >= limit) {
            self.recheck(now);
            return false;
        }
        match self.policy.rate {
            Some(rate) => self.rate_allows(&rate, self.state.rate_tat_ns, now),
            None => true,
        }
    }

    /// A slot held this lease back: ask again after [`CONCURRENCY_RECHECK`].
    fn recheck(&mut self, now: Timestamp) {
        let at = unix_nanos(now).saturating_add(CONCURRENCY_RECHECK.as_nanos() as i64);
        self.retry_at_ns = Some(self.retry_at_ns.map_or(at, |earlier| earlier.min(at)));
    }

    /// Whether a rate limiter admits a grant now; if not, remembers when it will.
    fn rate_allows(&mut self, rate: &Rate, tat_ns: Option<i64>, now: Timestamp) -> bool {
        match gcra(rate, tat_ns, now) {
            Ok(_) => true,
            Err(at) => {
                self.retry_at_ns = Some(self.retry_at_ns.map_or(at, |earlier| earlier.min(at)));
                false
            }
        }
    }

    /// Whether `key` admits another lease now (the jobs without a key always do).
    fn key_open(&mut self, key: &str, now: Timestamp) -> bool {
        if key.is_empty() {
            return true;
        }
        if let Some(limit) = self.policy.key_concurrency
            && self.key_running.get(key).copied().unwrap_or(0) >= limit
        {
            self.recheck(now);
            return false;
        }
        match self.policy.key_rate {
            Some(rate) => self.rate_allows(&rate, self.key_tats.get(key).copied(), now),
            None => true,
        }
    }

    /// The next job this queue would grant, without granting it. Retries
    /// over budget met on the way are deferred; keys found held leave the
    /// rotation for this lease.
    fn peek(&mut self, now: Timestamp, gates: &mut Gates) -> Option<&(i64, Job)> {
        if self.closed || !self.queue_open(now) {
            self.closed = true;
            return None;
        }
        loop {
            if let Pending::Rotation { .. } = self.pending {
                self.rotate_to_open_key(now)?;
            }
            let job = &self.front()?.1;
            if !gates.open(job, now) {
                // Its resource holds it: it stays queued.
                self.pop_front();
                continue;
            }
            if !(is_retry(job) && self.state.budget.is_some_and(|(tokens, _)| tokens < 1.0)) {
                break;
            }
            let (_, job) = self.pop_front().expect("a front job");
            self.defer(job, now);
        }
        self.front()
    }

    fn front(&self) -> Option<&(i64, Job)> {
        match &self.pending {
            Pending::Ordered(heads) => heads.front(),
            Pending::Rotation { keys, .. } => keys.front().and_then(|(_, jobs)| jobs.front()),
        }
    }

    fn pop_front(&mut self) -> Option<(i64, Job)> {
        match &mut self.pending {
            Pending::Ordered(heads) => heads.pop_front(),
            Pending::Rotation { keys, .. } => keys.front_mut().and_then(|(_, jobs)| jobs.pop_front()),
        }
    }

    /// Ends turns until the front key has a job, turns left and is not
    /// held; `None` when no key is left. A held key leaves the rotation for
    /// this lease; a key whose turn is used up goes to the back.
    fn rotate_to_open_key(&mut self, now: Timestamp) -> Option<()> {
        loop {
            let Pending::Rotation { keys, served, .. } = &self.pending else {
                return Some(());
            };
            let (key, jobs) = keys.front()?;
            let turn_over = *served >= self.policy.weight(key) || jobs.is_empty();
            let key = key.clone();
            let held = !turn_over && !self.key_open(&key, now);
            let Pending::Rotation { keys, served, last } = &mut self.pending else {
                unreachable!("checked above")
            };
            *last = Some(Cursor { key, served: *served });
            if !turn_over && !held {
                return Some(());
            }
            let (key, jobs) = keys.pop_front().expect("a front key");
            *served = 0;
            if !held && !jobs.is_empty() {
                keys.push_back((key, jobs));
            }
        }
    }

    /// Grants the job [`Admission::peek`] found.
    fn take(&mut self, now: Timestamp) -> Job {
        let (_, job) = match &mut self.pending {
            Pending::Ordered(heads) => heads.pop_front(),
            Pending::Rotation { keys, served, last } => {
                *served += 1;
                let (key, jobs) = keys.front_mut().expect("peeked");
                *last = Some(Cursor {
                    key: key.clone(),
                    served: *served,
                });
                jobs.pop_front()
            }
        }
        .expect("take follows a successful peek");
        self.count(&job, now);
        job
    }

    /// What granting `job` changes in the rules' state.
    fn count(&mut self, job: &Job, now: Timestamp) {
        self.running += 1;
        if let Some(rate) = &self.policy.rate {
            self.state.rate_tat_ns = gcra(rate, self.state.rate_tat_ns, now).ok();
        }
        if let Some(key) = &job.flow_key {
            let key = key.as_str();
            if self.policy.key_concurrency.is_some() {
                *self.key_running.entry(key.to_owned()).or_default() += 1;
            }
            if let Some(rate) = &self.policy.key_rate
                && let Ok(tat) = gcra(rate, self.key_tats.get(key).copied(), now)
            {
                self.key_tats.insert(key.to_owned(), tat);
                if !self.moved_keys.iter().any(|moved| moved == key) {
                    self.moved_keys.push(key.to_owned());
                }
            }
        }
        if let (Some(budget), Some((tokens, at))) = (&self.policy.retry_budget, &mut self.state.budget) {
            *tokens = if is_retry(job) {
                *tokens - 1.0
            } else {
                *tokens + budget.ratio
            };
            *at = now;
        }
    }

    /// Sends a retry over budget back to `scheduled` until a token is likely.
    fn defer(&mut self, job: Job, now: Timestamp) {
        let wait = match (&self.policy.retry_budget, self.state.budget) {
            (Some(budget), Some((tokens, _))) if budget.min_per_sec > 0.0 => {
                Duration::try_from_secs_f64(((1.0 - tokens) / budget.min_per_sec).max(0.0)).unwrap_or(MAX_DEFER)
            }
            _ => Duration::from_secs(1),
        }
        .clamp(MIN_DEFER, MAX_DEFER);
        let until = now.saturating_add(wait).unwrap_or(Timestamp::MAX);
        let deferred = lifecycle::defer(&job, until, now).expect("candidates are queued");
        self.deferred.push(deferred);
    }

    /// The writes the lease owes this queue's rules.
    fn finish(mut self, tenant_id: TenantId, now: Timestamp, admitted: &mut Admitted, writes: &mut Writes) {
        let now_ns = unix_nanos(now);
        if !self.deferred.is_empty() {
            admitted.deferred.push((self.queue.clone(), self.deferred.len() as u32));
            // The jobs behind the deferred retries may go now.
            self.retry_at_ns = Some(self.retry_at_ns.map_or(now_ns, |earlier| earlier.min(now_ns)));
        }
        if let Some(at) = self
            .retry_at_ns
            .and_then(|ns| Timestamp::from_nanosecond(ns.into()).ok())
        {
            admitted.retry_at = Some(admitted.retry_at.map_or(at, |earlier| earlier.min(at)));
        }
        for job in self.deferred {
            writes.changed_jobs.push(job);
        }
        for key in &self.moved_keys {
            writes.flow.push(FlowWrite::KeyRate {
                tenant_id,
                queue: self.queue.clone(),
                key: key.clone(),
                tat_ns: self.key_tats[key],
            });
        }
        let mut state = self.state;
        if let Pending::Rotation { last, .. } = self.pending {
            state.cursor = last;
        }
        let tokens = |state: &QueueFlowState| state.budget.map(|(tokens, _)| tokens);
        if tokens(&state) == tokens(&self.state_before) {
            // Recomputing the decayed balance alone is not worth a write.
            state.budget = self.state_before.budget;
        }
        if state != self.state_before {
            writes.flow.push(FlowWrite::Queue {
                tenant_id,
                queue: self.queue,
                state,
            });
        }
    }
}

/// Whether a ready job's next attempt follows a failed one in its current
/// budget of attempts (a retry), rather than being its first.
pub fn is_retry(job: &Job) -> bool {
    let rate_limited = job
        .last_error
        .as_ref()
        .is_some_and(|error| error.kind.as_deref() == Some(steadfast_core::lifecycle::RATE_LIMITED));
    job.attempt > job.uncounted_attempts || (job.attempt > 0 && rate_limited)
}

/// The retry budget's balance at `now`: the stored balance decays toward
/// the reserve (`min_per_sec` × the memory) with a 10 s time constant.
pub fn balance(budget: &RetryBudget, stored: Option<(f64, Timestamp)>, now: Timestamp) -> f64 {
    let reserve = budget.min_per_sec * BUDGET_MEMORY_SECS;
    match stored {
        None => reserve,
        Some((tokens, at)) => {
            let elapsed = now.duration_since(at).as_secs_f64().max(0.0);
            let kept = (-elapsed / BUDGET_MEMORY_SECS).exp();
            tokens * kept + reserve * (1.0 - kept)
        }
    }
}

/// One GCRA decision with `governor`, on a theoretical arrival time kept
/// in the database: the new arrival time if a grant conforms at `now`, or
/// the earliest time one will, both in Unix nanoseconds.
pub fn gcra(rate: &Rate, tat_ns: Option<i64>, now: Timestamp) -> Result<i64, i64> {
    let now_ns = unix_nanos(now);
    // An arrival time left by an earlier, stricter rate holds no longer
    // than this rate's full burst would.
    let horizon = (rate.emission_interval().as_nanos() as i64).saturating_mul(i64::from(rate.burst.max(1)));
    let tat_ns = tat_ns.map(|tat| tat.min(now_ns.saturating_add(horizon)));
    let quota = Quota::with_period(rate.emission_interval())
        .expect("the interval is at least 1 ns")
        .allow_burst(std::num::NonZeroU32::new(rate.burst.max(1)).expect("at least 1"));
    // The limiter's clock stands still at zero, which is `now`: the stored
    // absolute time becomes an offset from now, and back.
    let ahead = Cell::new(tat_ns.map(|tat| Nanos::new(tat.saturating_sub(now_ns).max(0) as u64)));
    let clock = FakeRelativeClock::default();
    let limiter: RateLimiter<NotKeyed, StoredTat<'_>, FakeRelativeClock, NoOpMiddleware<Nanos>> =
        RateLimiter::new(quota, StoredTat(&ahead), clock.clone());
    match limiter.check() {
        Ok(()) => {
            let ahead = ahead.get().map(|nanos| nanos.as_u64()).unwrap_or(0);
            Ok(now_ns.saturating_add(ahead as i64))
        }
        Err(not_until) => {
            let zero: Nanos = governor::clock::Clock::now(&clock);
            let wait = not_until.wait_time_from(zero);
            Err(now_ns.saturating_add(wait.as_nanos() as i64))
        }
    }
}

/// A rate limiter's state for one decision: governor reads and replaces it
/// through [`StateStore`]; the lease writes it back to its row.
#[derive(Debug)]
struct StoredTat<'a>(&'a Cell<Option<Nanos>>);

impl StateStore for StoredTat<'_> {
    type Key = NotKeyed;

    fn measure_and_replace<T, F, E>(&self, _key: &NotKeyed, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let (answer, next) = f(self.0.get())?;
        self.0.set(Some(next));
        Ok(answer)
    }
}

fn unix_nanos(at: Timestamp) -> i64 {
    i64::try_from(at.as_nanosecond()).unwrap_or(i64::MAX)
}

/// Applies `patch` to the stored policy: the new policy (checked against
/// every bound) and the audit record of the change.
pub fn set_policy(
    queue: &QueueName,
    stored: QueuePolicy,
    patch: PolicyPatch,
) -> Result<(QueuePolicy, steadfast_core::audit::Draft), StoreError> {
    let policy = patch.apply(stored.clone());
    policy.validate().map_err(StoreError::Invalid)?;
    let draft = crate::audit::drafts::queue_policy_set(queue, &stored, &policy);
    Ok((policy, draft))
}

/// Creates a resource or replaces its configuration, keeping its breaker
/// state: the resource to store and the audit record of the change.
pub fn put_resource(
    name: &ResourceName,
    existing: Option<Resource>,
    config: ResourceConfig,
    now: Timestamp,
) -> Result<(Resource, steadfast_core::audit::Draft), StoreError> {
    config.validate().map_err(StoreError::Invalid)?;
    let before = existing.as_ref().map(|resource| &resource.config);
    let draft = crate::audit::drafts::resource_set(name, before, &config);
    let resource = match existing {
        // A changed breaker starts closed with an empty window: probes or
        // counts made under the old one mean nothing under the new.
        Some(existing) if existing.config.breaker != config.breaker => Resource {
            config,
            updated_at: now,
            state: ResourceState::fresh(now).with_rate(existing.state.rate_tat_ns),
            ..existing
        },
        Some(existing) => Resource {
            config,
            updated_at: now,
            ..existing
        },
        None => Resource {
            name: name.clone(),
            config,
            state: ResourceState::fresh(now),
            created_at: now,
            updated_at: now,
        },
    };
    Ok((resource, draft))
}

/// Which of a queue's ready jobs its rules hold now, and why (each job
/// under its first reason; see [`Held`]).
pub fn held(flow: &QueueFlow, counts: &ReadyCounts, now: Timestamp) -> Held {
    let policy = &flow.policy;
    let mut left = counts.queued;
    let mut take = |n: u64| {
        let n = n.min(left);
        left -= n;
        n
    };
    let mut held = Held::default();
    if policy.paused {
        held.paused = take(u64::MAX);
        return held;
    }
    held.breaker_open = take(counts.of_blocked_resources);
    if policy
        .concurrency
        .is_some_and(|limit| counts.running >= u64::from(limit))
    {
        held.concurrency = take(u64::MAX);
    }
    held.key_concurrency = take(counts.of_saturated_keys);
    let queue_rate_held = policy
        .rate
        .is_some_and(|rate| gcra(&rate, flow.state.rate_tat_ns, now).is_err());
    held.rate = take(if queue_rate_held {
        u64::MAX
    } else {
        counts.of_rate_held_keys
    });
    if let Some(budget) = &policy.retry_budget
        && balance(budget, flow.state.budget, now) < 1.0
    {
        held.retry_budget = take(counts.retries);
    }
    held
}

/// The keys whose rate admits no lease at `now`, of those with a stored
/// arrival time.
pub fn rate_held_keys(policy: &QueuePolicy, tats: Vec<(String, i64)>, now: Timestamp) -> Vec<String> {
    let Some(rate) = &policy.key_rate else {
        return Vec::new();
    };
    tats.into_iter()
        .filter(|(_, tat)| gcra(rate, Some(*tat), now).is_err())
        .map(|(key, _)| key)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use steadfast_core::lifecycle::{JobSpec, new_job};
    use steadfast_core::{FlowKey, JobId};

    use super::*;
    use crate::flow::Fairness;

    fn t0() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn after(ms: u64) -> Timestamp {
        t0().saturating_add(Duration::from_millis(ms)).unwrap()
    }

    fn tenant() -> TenantId {
        TenantId(uuid::Uuid::nil())
    }

    /// A ready job of queue `q`: `key` is its flow key (`""` for none);
    /// `retry` makes its next attempt follow a failed one.
    fn job(n: u64, key: &str, retry: bool) -> (i64, Job) {
        let spec = JobSpec {
            queue: QueueName::new("q").unwrap(),
            payload: "{}".into(),
            idempotency: None,
            max_attempts: 10,
            timeout: Duration::from_secs(60),
            run_at: None,
            priority: 0,
            traceparent: None,
            flow_key: (!key.is_empty()).then(|| FlowKey::new(key).unwrap()),
            resource: None,
            singleton: None,
            schema_version: None,
            producer: None,
        };
        let mut job = new_job(JobId(uuid::Uuid::from_u64_pair(0, n)), tenant(), spec, t0());
        if retry {
            job.attempt = 1;
        }
        (n as i64, job)
    }

    fn lease_of(policy: QueuePolicy, state: QueueFlowState, candidates: Candidates) -> QueueLease {
        QueueLease {
            queue: QueueName::new("q").unwrap(),
            flow: QueueFlow { policy, state },
            running: 0,
            key_running: HashMap::new(),
            key_tats: HashMap::new(),
            candidates,
        }
    }

    fn queue_state(writes: &Writes) -> Option<QueueFlowState> {
        writes.flow.iter().find_map(|write| match write {
            FlowWrite::Queue { state, .. } => Some(state.clone()),
            FlowWrite::KeyRate { .. } | FlowWrite::Resource { .. } => None,
        })
    }

    proptest! {
        /// In any window of W, a GCRA rate grants at most `burst` + W/T,
        /// T being the emission interval (limit per period).
        #[test]
        fn a_rate_never_grants_more_than_its_burst_plus_the_steady_rate(
            limit in 1u32..20,
            period_ms in 1u64..2000,
            burst in 1u32..10,
            gaps in prop::collection::vec(0u64..3000, 1..200),
        ) {
            let rate = Rate { limit, period_ms, burst };
            let interval = rate.emission_interval().as_nanos() as f64;
            let mut tat = None;
            let mut grants: Vec<i64> = Vec::new();
            let mut now = 0;
            for gap in gaps {
                now += gap;
                if let Ok(next) = gcra(&rate, tat, after(now)) {
                    tat = Some(next);
                    grants.push(unix_nanos(after(now)));
                }
            }
            for (i, first) in grants.iter().enumerate() {
                for (j, last) in grants.iter().enumerate().skip(i) {
                    let window = (last - first) as f64;
                    let allowed = f64::from(burst) + window / interval;
                    prop_assert!(
                        (j - i + 1) as f64 <= allowed + 1e-9,
                        "{} grants in {} ns, {} allowed", j - i + 1, window, allowed
                    );
                }
            }
        }

        /// No lease takes more than the queue's free slots, or a key's.
        #[test]
        fn leases_never_exceed_the_queue_or_a_key_concurrency(
            concurrency in prop::option::of(1u32..8),
            key_concurrency in 1u32..4,
            running in 0u32..10,
            keys in prop::collection::vec((0usize..4, 0u32..4, 0usize..6), 1..6),
            max_jobs in 1u32..30,
        ) {
            let mut key_running = HashMap::new();
            let mut by_key: KeyedJobs = Vec::new();
            let mut n = 0;
            for (index, (name, running_of_key, ready)) in keys.iter().enumerate() {
                let key = if *name == 0 { String::new() } else { format!("k{name}-{index}") };
                if !key.is_empty() {
                    key_running.insert(key.clone(), *running_of_key);
                }
                let jobs = (0..*ready).map(|_| { n += 1; job(n, &key, false) }).collect();
                by_key.push((key, jobs));
            }
            let policy = QueuePolicy {
                concurrency,
                key_concurrency: Some(key_concurrency),
                ..QueuePolicy::default()
            };
            let mut lease = lease_of(policy, QueueFlowState::default(), Candidates::ByKey(by_key));
            lease.running = running;
            lease.key_running = key_running.clone();
            let (admitted, _) = admit(tenant(), vec![lease], Vec::new(), None, max_jobs, t0());
            prop_assert!(admitted.jobs.len() <= max_jobs as usize);
            if let Some(limit) = concurrency {
                prop_assert!(admitted.jobs.len() as u32 <= limit.saturating_sub(running));
            }
            let mut granted: HashMap<String, u32> = HashMap::new();
            for job in &admitted.jobs {
                if let Some(key) = &job.flow_key {
                    *granted.entry(key.to_string()).or_default() += 1;
                }
            }
            for (key, count) in granted {
                let before = key_running.get(&key).copied().unwrap_or(0);
                prop_assert!(before + count <= key_concurrency.max(before), "{key}: {before} + {count}");
            }
        }

        /// Keys take turns in proportion to their weights, whatever the
        /// lease sizes: over a run, each key's share is its weight's.
        #[test]
        fn keys_share_leases_by_weight(
            weights in prop::collection::vec(1u32..5, 2..5),
            sizes in prop::collection::vec(1u32..7, 50..120),
        ) {
            let keys: Vec<String> = (0..weights.len()).map(|i| format!("key-{i}")).collect();
            let policy = QueuePolicy {
                fairness: Some(Fairness::FlowKey),
                weights: keys.iter().cloned().zip(weights.iter().copied()).collect::<BTreeMap<_, _>>(),
                ..QueuePolicy::default()
            };
            let mut state = QueueFlowState::default();
            let mut taken: HashMap<String, u32> = HashMap::new();
            let mut n = 0;
            for size in sizes {
                // As a backend loads them: keys in order from the cursor's, wrapping.
                let start = state.cursor.as_ref().map_or(0, |c| keys.iter().position(|k| *k == c.key).unwrap_or(0));
                let rotation: KeyedJobs = (0..keys.len())
                    .map(|i| {
                        let key = keys[(start + i) % keys.len()].clone();
                        let jobs = (0..size).map(|_| { n += 1; job(n, &key, false) }).collect();
                        (key, jobs)
                    })
                    .collect();
                let lease = lease_of(policy.clone(), state.clone(), Candidates::ByKey(rotation));
                let (admitted, writes) = admit(tenant(), vec![lease], Vec::new(), None, size, t0());
                prop_assert_eq!(admitted.jobs.len(), size as usize);
                for job in &admitted.jobs {
                    *taken.entry(job.flow_key.as_ref().unwrap().to_string()).or_default() += 1;
                }
                state = queue_state(&writes).unwrap_or(state);
            }
            let total: u32 = taken.values().sum();
            let weight_sum: u32 = weights.iter().sum();
            for (key, weight) in keys.iter().zip(&weights) {
                let share = f64::from(taken.get(key).copied().unwrap_or(0));
                let expected = f64::from(total) * f64::from(*weight) / f64::from(weight_sum);
                prop_assert!((share - expected).abs() <= f64::from(weight_sum), "{key}: {share} vs {expected}");
            }
        }
    }

    #[test]
    fn a_paused_queue_grants_nothing_and_writes_nothing() {
        let policy = QueuePolicy {
            paused: true,
            concurrency: Some(10),
            ..QueuePolicy::default()
        };
        let heads = (0..5).map(|n| job(n, "", false)).collect();
        let lease = lease_of(policy, QueueFlowState::default(), Candidates::Ordered(heads));
        let (admitted, writes) = admit(tenant(), vec![lease], Vec::new(), None, 10, t0());
        assert!(admitted.jobs.is_empty());
        assert_eq!(writes, Writes::default());
    }

    /// With every attempt failing, retries settle at the budget's ratio of
    /// first attempts (plus its small reserve), and first attempts keep
    /// flowing: a retry storm cannot crowd them out.
    #[test]
    fn under_total_failure_retries_converge_on_the_budget() {
        let budget = RetryBudget {
            ratio: 0.2,
            min_per_sec: 1.0,
        };
        let policy = QueuePolicy {
            retry_budget: Some(budget),
            ..QueuePolicy::default()
        };
        let mut state = QueueFlowState::default();
        let (mut firsts, mut retries, mut deferred) = (0u32, 0u32, 0u32);
        let mut n = 0;
        let seconds = 120;
        for step in 0..seconds * 10 {
            // Every 100 ms: a backlog of retries ahead of new first attempts.
            let mut heads: Vec<(i64, Job)> = (0..20)
                .map(|_| {
                    n += 1;
                    job(n, "", true)
                })
                .collect();
            heads.extend((0..5).map(|_| {
                n += 1;
                job(n, "", false)
            }));
            let lease = lease_of(policy.clone(), state.clone(), Candidates::Ordered(heads));
            let (admitted, writes) = admit(tenant(), vec![lease], Vec::new(), None, 100, after(step * 100));
            firsts += admitted.jobs.iter().filter(|job| !is_retry(job)).count() as u32;
            retries += admitted.jobs.iter().filter(|job| is_retry(job)).count() as u32;
            deferred += admitted.deferred.iter().map(|(_, n)| n).sum::<u32>();
            state = queue_state(&writes).unwrap_or(state);
        }
        assert_eq!(firsts, seconds as u32 * 50, "every first attempt ran");
        let ceiling = budget.ratio * f64::from(firsts) + budget.min_per_sec * (seconds as f64 + BUDGET_MEMORY_SECS);
        assert!(f64::from(retries) <= ceiling, "{retries} retries, at most {ceiling}");
        assert!(
            f64::from(retries) >= 0.9 * budget.ratio * f64::from(firsts),
            "{retries} retries of {firsts}"
        );
        assert!(deferred > 0);
    }
}
