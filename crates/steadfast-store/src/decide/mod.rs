//! The decisions every backend shares.
//!
//! A backend operation has three phases: it loads the rows the operation
//! needs (backend SQL), calls one function of this module, and writes the
//! [`Writes`] that function returns (backend SQL again), all in one
//! transaction. Which transition applies, what the audit log says about it,
//! which per-job limits hold, what a replayed idempotency key answers: all of
//! that is decided here, once, so the two backends differ only in how they
//! read and write rows (the shape of River's drivers).
//!
//! Every function here is pure: no IO, no clock, no randomness beyond the
//! seeds the engine passed in.

mod bulk;
pub mod flow;
mod inbox;
mod jobs;
mod keys;
mod retention;
mod schedules;
mod schemas;
mod signing_keys;
mod slos;
mod sweeps;
mod workflows;

pub use bulk::{BulkCandidate, bulk_step, cancel_bulk, start_bulk};
pub use inbox::{Ingest, LiveInboxKey, ingest, replay, retire_secrets, within_source_limit};
pub use jobs::{
    ClaimedKey, cancel, complete, complete_many, enqueue, fail, found, heartbeat, lease, needs_history, release,
    replay_job, resumable, retry,
};
pub use keys::{Rotation, key_ended, revocation, rotate_key};
pub use retention::prune_cutoffs;
pub use schedules::{delete_schedule, pause_schedule, put_schedule};
pub use schemas::register_schema;
pub use signing_keys::{KeyChange, NewSigningKey, SigningKeyRecord, SigningKeyRefused, register_signing_key};
pub use slos::{SloFiring, slo_firing};
pub use sweeps::{expire_leases, fire_timers};
pub use workflows::{StepRows, checkpoint_step, resolve_step, signal, spawn_child, start_step, step_many, wait};

use steadfast_core::audit::{Actor, Draft};
use steadfast_core::{
    Attempt, IdempotencyKey, Job, JobId, JobState, QueueName, Signal, Step, StepName, TenantId, Timestamp,
};

use crate::TenantScope;

/// What an operation answers, and what must be written, in the same
/// transaction, for that answer to be true.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<T> {
    pub answer: T,
    pub writes: Writes,
}

impl<T> Decision<T> {
    /// An answer that changes nothing.
    pub fn read_only(answer: T) -> Decision<T> {
        Decision {
            answer,
            writes: Writes::default(),
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Decision<U> {
        Decision {
            answer: f(self.answer),
            writes: self.writes,
        }
    }
}

/// Every row one operation writes. Backends write the groups in the order
/// of the fields, each group in the order it holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Writes {
    /// New jobs, in enqueue (FIFO) order.
    pub new_jobs: Vec<Job>,
    /// Jobs a transition changed: their state, lease, wait, result fields.
    pub changed_jobs: Vec<Job>,
    /// Attempts that ended, with their job's tenant and id.
    pub attempts: Vec<EndedAttempt>,
    /// Steps to record. The first checkpoint wins: a backend never
    /// overwrites a completed step.
    pub steps: Vec<StepWrite>,
    /// Uncompleted step markers to remove (an operator resolved an
    /// uncertain step as failed or to be run again).
    pub forgotten_steps: Vec<ForgottenStep>,
    /// Pending signals that a wait consumed.
    pub consumed_signals: Vec<ConsumedSignal>,
    /// Signals delivered, appended to their job's signal queue.
    pub signals: Vec<SignalWrite>,
    /// Idempotency keys claimed by new jobs (inserted, or replacing an
    /// expired claim).
    pub keys: Vec<ClaimedKey>,
    /// New payloads of jobs a singleton enqueue replaced (their other
    /// changes are in `changed_jobs`).
    pub payloads: Vec<PayloadWrite>,
    /// Flow control state that leases moved (queues' and keys' limiters,
    /// the fairness cursor, retry budgets).
    pub flow: Vec<flow::FlowWrite>,
    /// Bulk operations started or moved on (upserted whole).
    pub bulk_operations: Vec<crate::bulk::BulkOperation>,
    /// Queues whose waiting workers should ask again once this commits,
    /// though no job became ready (a changed policy).
    pub woken: Vec<(TenantId, QueueName)>,
    /// Audit drafts, each for its tenant's chain, in chain order.
    pub audit: Vec<(TenantId, Draft)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadWrite {
    pub tenant_id: TenantId,
    pub job_id: JobId,
    pub payload: String,
    pub schema_version: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedAttempt {
    pub tenant_id: TenantId,
    pub job_id: JobId,
    pub attempt: Attempt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepWrite {
    pub tenant_id: TenantId,
    pub job_id: JobId,
    pub step: Step,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgottenStep {
    pub tenant_id: TenantId,
    pub job_id: JobId,
    pub name: StepName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedSignal {
    pub tenant_id: TenantId,
    pub job_id: JobId,
    /// The signal's position in its job's queue, as loaded.
    pub seq: i64,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalWrite {
    pub tenant_id: TenantId,
    pub job_id: JobId,
    pub signal: Signal,
    /// Set when the signal woke its job (consumed on arrival).
    pub consumed_at: Option<Timestamp>,
}

/// A pending signal as loaded: its position in the job's queue and itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSignal {
    pub seq: i64,
    pub signal: Signal,
}

impl Writes {
    /// Appends `other`'s writes after this one's, group by group.
    fn absorb(&mut self, other: Writes) {
        self.new_jobs.extend(other.new_jobs);
        self.changed_jobs.extend(other.changed_jobs);
        self.attempts.extend(other.attempts);
        self.steps.extend(other.steps);
        self.forgotten_steps.extend(other.forgotten_steps);
        self.consumed_signals.extend(other.consumed_signals);
        self.signals.extend(other.signals);
        self.keys.extend(other.keys);
        self.payloads.extend(other.payloads);
        self.flow.extend(other.flow);
        self.bulk_operations.extend(other.bulk_operations);
        self.woken.extend(other.woken);
        self.audit.extend(other.audit);
    }

    /// A singleton's unfinished job, given a new payload (and maybe run
    /// time): updated where this decision created it, else written as a
    /// change with its new payload.
    fn replace_payload(&mut self, before: &Job, after: &Job) {
        if let Some(new) = self.new_jobs.iter_mut().find(|job| job.id == after.id) {
            *new = after.clone();
            return;
        }
        self.changed_jobs.retain(|job| job.id != after.id);
        self.changed_jobs.push(after.clone());
        self.payloads.retain(|write| write.job_id != after.id);
        self.payloads.push(PayloadWrite {
            tenant_id: after.tenant_id,
            job_id: after.id,
            payload: after.payload.clone(),
            schema_version: after.schema_version,
        });
        self.audit(
            after.tenant_id,
            crate::audit::drafts::job_payload_replaced(before, after),
        );
    }

    fn audit(&mut self, tenant: TenantId, draft: Draft) {
        self.audit.push((tenant, draft));
    }

    /// Records a transition's result: the changed job and the attempt it ended.
    fn transition(&mut self, job: &Job, ended: Option<&Attempt>) {
        self.changed_jobs.push(job.clone());
        if let Some(attempt) = ended {
            self.attempts.push(EndedAttempt {
                tenant_id: job.tenant_id,
                job_id: job.id,
                attempt: attempt.clone(),
            });
        }
    }

    fn step(&mut self, job: &Job, step: &Step) {
        self.steps.push(StepWrite {
            tenant_id: job.tenant_id,
            job_id: job.id,
            step: step.clone(),
        });
    }

    /// Queues that gain ready jobs once these writes commit, each once, in
    /// the order first met: long-polling workers of these queues are woken.
    pub fn ready_queues(&self) -> Vec<(TenantId, QueueName)> {
        let mut ready: Vec<(TenantId, QueueName)> = Vec::new();
        for job in self.new_jobs.iter().chain(&self.changed_jobs) {
            let queue = (job.tenant_id, job.queue.clone());
            if job.state == JobState::Queued && !ready.contains(&queue) {
                ready.push(queue);
            }
        }
        for queue in &self.woken {
            if !ready.contains(queue) {
                ready.push(queue.clone());
            }
        }
        ready
    }

    /// The same writes, split by tenant (tenants in the order first met, each
    /// group in its original order): for a backend that must name the
    /// tenant of each write, as row-level security does.
    pub fn by_tenant(self) -> Vec<(TenantId, Writes)> {
        fn group(groups: &mut Vec<(TenantId, Writes)>, tenant: TenantId) -> &mut Writes {
            let index = match groups.iter().position(|(t, _)| *t == tenant) {
                Some(index) => index,
                None => {
                    groups.push((tenant, Writes::default()));
                    groups.len() - 1
                }
            };
            &mut groups[index].1
        }
        let mut groups = Vec::new();
        for job in self.new_jobs {
            group(&mut groups, job.tenant_id).new_jobs.push(job);
        }
        for job in self.changed_jobs {
            group(&mut groups, job.tenant_id).changed_jobs.push(job);
        }
        for attempt in self.attempts {
            group(&mut groups, attempt.tenant_id).attempts.push(attempt);
        }
        for step in self.steps {
            group(&mut groups, step.tenant_id).steps.push(step);
        }
        for forgotten in self.forgotten_steps {
            group(&mut groups, forgotten.tenant_id).forgotten_steps.push(forgotten);
        }
        for consumed in self.consumed_signals {
            group(&mut groups, consumed.tenant_id).consumed_signals.push(consumed);
        }
        for signal in self.signals {
            group(&mut groups, signal.tenant_id).signals.push(signal);
        }
        for key in self.keys {
            group(&mut groups, key.tenant_id).keys.push(key);
        }
        for write in self.payloads {
            group(&mut groups, write.tenant_id).payloads.push(write);
        }
        for write in self.flow {
            group(&mut groups, write.tenant_id()).flow.push(write);
        }
        for operation in self.bulk_operations {
            group(&mut groups, operation.tenant_id).bulk_operations.push(operation);
        }
        for (tenant, queue) in self.woken {
            group(&mut groups, tenant).woken.push((tenant, queue));
        }
        for (tenant, draft) in self.audit {
            group(&mut groups, tenant).audit.push((tenant, draft));
        }
        groups
    }

    /// The audit drafts grouped into runs of one tenant, in order: a backend
    /// appends each run to its tenant's chain.
    pub fn audit_runs(&self) -> Vec<(TenantId, Vec<&Draft>)> {
        let mut runs: Vec<(TenantId, Vec<&Draft>)> = Vec::new();
        for (tenant, draft) in &self.audit {
            match runs.last_mut() {
                Some((last, drafts)) if last == tenant => drafts.push(draft),
                _ => runs.push((*tenant, vec![draft])),
            }
        }
        runs
    }
}

/// Who the audit records of a change name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub actor: Actor,
    pub request_id: Option<String>,
}

impl Author {
    /// The caller of a request.
    pub fn of(scope: &TenantScope) -> Author {
        Author {
            actor: scope.actor().clone(),
            request_id: scope.request_id().map(str::to_owned),
        }
    }

    /// Steadfast itself: timers, lease expiry, retention.
    pub fn system() -> Author {
        Author {
            actor: Actor::System,
            request_id: None,
        }
    }
}

/// A key's stored claim, as loaded for an enqueue: only claims still inside
/// their dedup window are loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveKey {
    pub key: IdempotencyKey,
    pub fingerprint: Vec<u8>,
    /// The job the key names; `None` if that job no longer exists.
    pub job: Option<Job>,
}
