//! Decisions about one tenant's jobs: enqueue, lease, and the transitions a
//! worker or an operator asks for.

use std::collections::HashMap;
use std::time::Duration;

use steadfast_core::lifecycle::{self, Failure, Fingerprint, Rejection, SingletonMode, Transition};
use steadfast_core::retry::jitter_sample;
use steadfast_core::{
    Attempt, FlowKey, IdempotencyKey, Job, JobId, QueueName, Reason, Step, StepState, TenantId, Timestamp,
};

use super::flow::{self, Admitted, Blocked, QueueLease, ResourceLease};
use super::{Decision, LiveKey, Writes};
use crate::audit::drafts;
use crate::{Completing, Ended, Enqueued, LeaseRequest, LeasedJob, NewJob, RetryPlan, SingletonOutcome, StoreError};

/// A claim on an idempotency key, written with the job it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedKey {
    pub tenant_id: TenantId,
    pub key: IdempotencyKey,
    pub job_id: JobId,
    pub fingerprint: Fingerprint,
    pub expires_at: Timestamp,
}

/// The job a request names, or `NotFound`.
pub fn found(job: Option<Job>) -> Result<Job, StoreError> {
    job.ok_or(StoreError::NotFound)
}

/// Creates `jobs`, all or none. A job whose key has a live claim with the
/// same fingerprint (loaded into `live`, or made earlier in this batch) is
/// not created again: its entry is the claimed job, `replayed`. A live claim
/// with another fingerprint fails the whole batch. A claim whose job is
/// gone is taken over. A job whose singleton key already has an unfinished
/// job in its queue (loaded into `singletons`, or made earlier in this
/// batch) is not created either: `skip` answers that job, `replace` gives
/// it the new payload (and a debounce its new run time), and fails the
/// batch if that job has started.
pub fn enqueue(
    tenant: TenantId,
    jobs: Vec<NewJob>,
    live: Vec<LiveKey>,
    singletons: Vec<Job>,
    dedup_window: Duration,
    now: Timestamp,
) -> Result<Decision<Vec<Enqueued>>, StoreError> {
    let expires_at = now.saturating_add(dedup_window).unwrap_or(Timestamp::MAX);
    let mut claims: HashMap<IdempotencyKey, (Vec<u8>, Option<Job>)> = live
        .into_iter()
        .map(|live| (live.key, (live.fingerprint, live.job)))
        .collect();
    let mut singletons: HashMap<(QueueName, FlowKey), Job> = singletons
        .into_iter()
        .filter_map(|job| Some(((job.queue.clone(), job.singleton_key.clone()?), job)))
        .collect();
    let mut writes = Writes::default();
    let mut created = Vec::with_capacity(jobs.len());
    for (index, new) in jobs.into_iter().enumerate() {
        if let Some((key, fingerprint)) = &new.spec.idempotency
            && let Some((stored, job)) = claims.get(key)
        {
            if stored.as_slice() != fingerprint.as_slice() {
                return Err(StoreError::IdempotencyKeyReused { index });
            }
            if let Some(job) = job {
                created.push(Enqueued::replayed(job.clone()));
                continue;
            }
        }
        let claim = new.spec.idempotency.clone();
        let existing = new
            .spec
            .singleton
            .as_ref()
            .and_then(|singleton| singletons.get(&(new.spec.queue.clone(), singleton.key.clone())));
        let (job, outcome) = match (existing, &new.spec.singleton) {
            (Some(existing), Some(singleton)) => {
                let outcome = match singleton.mode {
                    SingletonMode::Skip => (existing.clone(), SingletonOutcome::Skipped),
                    SingletonMode::Replace => {
                        let replaced = lifecycle::replace_payload(
                            existing,
                            (new.spec.payload, new.spec.schema_version),
                            singleton.debounce,
                            now,
                        )
                        .map_err(|_| StoreError::SingletonRunning { index })?;
                        writes.replace_payload(existing, &replaced);
                        // Earlier items of this batch that answered with
                        // this job answer with it as it now is.
                        for earlier in created.iter_mut().filter(|e: &&mut Enqueued| e.job.id == replaced.id) {
                            earlier.job = replaced.clone();
                        }
                        (replaced, SingletonOutcome::Replaced)
                    }
                };
                (outcome.0, Some(outcome.1))
            }
            _ => {
                let job = lifecycle::new_job(new.id, tenant, new.spec, now);
                writes.audit(tenant, drafts::job_enqueued(&job));
                writes.new_jobs.push(job.clone());
                (job, None)
            }
        };
        if let Some(key) = &job.singleton_key {
            singletons.insert((job.queue.clone(), key.clone()), job.clone());
        }
        if let Some((key, fingerprint)) = claim {
            writes.keys.push(ClaimedKey {
                tenant_id: tenant,
                key: key.clone(),
                job_id: job.id,
                fingerprint,
                expires_at,
            });
            claims.insert(key, (fingerprint.to_vec(), Some(job.clone())));
        }
        created.push(Enqueued {
            job,
            replayed: false,
            singleton: outcome,
        });
    }
    Ok(Decision {
        answer: created,
        writes,
    })
}

/// Leases jobs from the requested queues under their flow rules (see
/// [`super::flow::admit`]). The answer is the leased jobs in lease order
/// (with the retries deferred and when to ask again); [`resumable`]
/// completes each with its workflow history.
pub fn lease(
    tenant: TenantId,
    request: &LeaseRequest,
    queues: Vec<QueueLease>,
    resources: Vec<ResourceLease>,
    blocked: &Blocked,
    now: Timestamp,
) -> Result<Decision<Admitted>, StoreError> {
    let (mut admitted, mut writes) = flow::admit(tenant, queues, resources, blocked.reopens_at, request.max_jobs, now);
    let mut leased = Vec::with_capacity(admitted.jobs.len());
    for before in std::mem::take(&mut admitted.jobs) {
        let job = lifecycle::lease(&before, request.grant(&before), now)?;
        writes.audit(job.tenant_id, drafts::job_leased(&before, &job));
        writes.changed_jobs.push(job.clone());
        leased.push(job);
    }
    admitted.jobs = leased;
    Ok(Decision {
        answer: admitted,
        writes,
    })
}

/// Whether a just-leased job resumes a workflow, so its steps and attempts
/// must be loaded: a first attempt has none, and costs no query.
pub fn needs_history(job: &Job) -> bool {
    job.attempt > 1
}

/// A leased job with what its workflow resumes from: every recorded step,
/// and the ended attempts that started the uncertain ones. `attempts` may
/// be all of the job's ended attempts.
pub fn resumable(job: Job, steps: Vec<Step>, attempts: Vec<Attempt>) -> LeasedJob {
    let uncertain: Vec<u32> = steps
        .iter()
        .filter(|step| step.state(&job) == StepState::Uncertain)
        .map(|step| step.attempt)
        .collect();
    let uncertain_attempts = attempts
        .into_iter()
        .filter(|attempt| uncertain.contains(&attempt.number))
        .collect();
    LeasedJob {
        job,
        steps,
        uncertain_attempts,
    }
}

/// One job's transition, and the audit record it gets (none for heartbeats).
fn transition(
    job: Option<Job>,
    apply: impl FnOnce(&Job) -> Result<Transition, Rejection>,
    describe: impl FnOnce(&Job, &Job) -> Option<steadfast_core::audit::Draft>,
) -> Result<Decision<Ended>, StoreError> {
    let before = found(job)?;
    let Transition { job, ended_attempt } = apply(&before)?;
    let mut writes = Writes::default();
    writes.transition(&job, ended_attempt.as_ref());
    if let Some(draft) = describe(&before, &job) {
        writes.audit(job.tenant_id, draft);
    }
    Ok(Decision {
        answer: Ended {
            job,
            attempt: ended_attempt,
        },
        writes,
    })
}

fn unchanged(job: Job) -> Transition {
    Transition {
        job,
        ended_attempt: None,
    }
}

pub fn heartbeat(job: Option<Job>, token: &str, ttl: Duration, now: Timestamp) -> Result<Decision<Job>, StoreError> {
    let decision = transition(
        job,
        |job| lifecycle::heartbeat(job, token, ttl, now).map(unchanged),
        |_, _| None,
    )?;
    Ok(decision.map(|ended| ended.job))
}

pub fn complete(job: Option<Job>, token: &str, output: String, now: Timestamp) -> Result<Decision<Ended>, StoreError> {
    transition(
        job,
        |job| lifecycle::complete(job, token, output, now),
        |before, after| Some(drafts::job_succeeded(before, after)),
    )
}

/// Completes each item on its own: an unknown job or a lost lease rejects
/// only that item. `loaded` holds the items' jobs that exist (any order). A
/// job named twice is completed once; the later item is refused `NotFound`.
pub fn complete_many(
    items: Vec<Completing>,
    loaded: Vec<Job>,
    now: Timestamp,
) -> Decision<Vec<Result<Ended, StoreError>>> {
    let mut loaded: HashMap<JobId, Job> = loaded.into_iter().map(|job| (job.id, job)).collect();
    let mut writes = Writes::default();
    let mut results = Vec::with_capacity(items.len());
    for Completing { id, token, output } in items {
        let result = match loaded.remove(&id) {
            None => Err(StoreError::NotFound),
            Some(before) => lifecycle::complete(&before, &token, output, now)
                .map(|Transition { job, ended_attempt }| {
                    writes.transition(&job, ended_attempt.as_ref());
                    writes.audit(job.tenant_id, drafts::job_succeeded(&before, &job));
                    Ended {
                        job,
                        attempt: ended_attempt,
                    }
                })
                .map_err(StoreError::from),
        };
        results.push(result);
    }
    Decision {
        answer: results,
        writes,
    }
}

pub fn fail(
    job: Option<Job>,
    token: &str,
    failure: Failure,
    retry: RetryPlan,
    now: Timestamp,
) -> Result<Decision<Ended>, StoreError> {
    transition(
        job,
        |job| {
            let sample = jitter_sample(retry.jitter_seed, job.id.0.as_bytes());
            lifecycle::fail(job, token, failure, &retry.policy, sample, now)
        },
        |before, after| Some(drafts::job_failed("job.failed", before, after)),
    )
}

/// A worker hands its job back unfinished: ready again at once, the
/// attempt not spent.
pub fn release(job: Option<Job>, token: &str, now: Timestamp) -> Result<Decision<Ended>, StoreError> {
    transition(
        job,
        |job| lifecycle::release(job, token, now),
        |before, after| Some(drafts::job_released(before, after)),
    )
}

/// Operator action: a dead or cancelled job goes back to `queued`, unless
/// another unfinished job now holds its singleton key (`singleton_taken`):
/// two would then be unfinished under one key.
pub fn retry(
    job: Option<Job>,
    singleton_taken: bool,
    reason: Option<&Reason>,
    now: Timestamp,
) -> Result<Decision<Job>, StoreError> {
    if let (true, Some(job)) = (singleton_taken, &job) {
        return Err(StoreError::InvalidState {
            state: job.state,
            action: "retry while another unfinished job holds its singleton key",
        });
    }
    let decision = transition(
        job,
        |job| lifecycle::retry(job, now).map(unchanged),
        |before, after| Some(drafts::job_retried(before, after, reason)),
    )?;
    Ok(decision.map(|ended| ended.job))
}

/// Operator action: an unfinished job becomes `cancelled`.
pub fn cancel(job: Option<Job>, reason: Option<&Reason>, now: Timestamp) -> Result<Decision<Ended>, StoreError> {
    transition(
        job,
        |job| lifecycle::cancel(job, now),
        |before, after| Some(drafts::job_cancelled(before, after, reason)),
    )
}

/// Operator action: a new job `id` with `original`'s queue and options
/// and `payload` (the original's when `None`), linked to the original; the
/// original is left exactly as it was. Any job can be replayed, finished or
/// not.
pub fn replay_job(
    original: Option<Job>,
    id: JobId,
    payload: Option<(String, Option<u32>)>,
    reason: &Reason,
    now: Timestamp,
) -> Result<Decision<Job>, StoreError> {
    let original = found(original)?;
    let job = lifecycle::replay(&original, id, payload, now);
    let mut writes = Writes::default();
    writes.audit(original.tenant_id, drafts::job_replayed(&original, &job, reason));
    writes.audit(original.tenant_id, drafts::job_enqueued(&job));
    writes.new_jobs.push(job.clone());
    Ok(Decision { answer: job, writes })
}
