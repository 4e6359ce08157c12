//! Decisions of durable workflows: steps, waits, signals and child jobs,
//! with the per-job limits that bound each.

use steadfast_core::lifecycle::{self, Checkpoint, Delivery, StepStart, WaitOutcome};
use steadfast_core::{Job, Signal, SignalName, Step, StepName, Timestamp, WaitFor};

use super::{ConsumedSignal, Decision, PendingSignal, SignalWrite, Writes, found};
use crate::audit::drafts;
use crate::{Enqueued, NewJob, Signalled, StoreError, Waited, WorkflowLimits};

/// What a step operation loads: the job, its step of the requested name,
/// and how many steps it has recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRows {
    pub job: Option<Job>,
    pub step: Option<Step>,
    pub step_count: u32,
}

/// Refuses a step the job has not recorded yet once it has `max_steps`.
fn check_step_room(rows: &StepRows, limits: WorkflowLimits) -> Result<(), StoreError> {
    if rows.step.is_none() && rows.step_count >= limits.max_steps {
        return Err(StoreError::LimitExceeded {
            what: "steps",
            limit: limits.max_steps,
        });
    }
    Ok(())
}

/// Marks a step started before its side effect.
pub fn start_step(
    rows: StepRows,
    token: &str,
    name: StepName,
    limits: WorkflowLimits,
    now: Timestamp,
) -> Result<Decision<StepStart>, StoreError> {
    let job = found(rows.job.clone())?;
    let started = lifecycle::start_step(&job, token, rows.step.as_ref(), name, now)?;
    let mut writes = Writes::default();
    if let StepStart::Started(step) = &started {
        check_step_room(&rows, limits)?;
        writes.step(&job, step);
        writes.audit(job.tenant_id, drafts::step_started(&job, step));
    }
    Ok(Decision {
        answer: started,
        writes,
    })
}

/// Stores a step's result; the first checkpoint wins.
pub fn checkpoint_step(
    rows: StepRows,
    token: &str,
    name: StepName,
    output: String,
    limits: WorkflowLimits,
    now: Timestamp,
) -> Result<Decision<Checkpoint>, StoreError> {
    let job = found(rows.job.clone())?;
    let checkpoint = lifecycle::checkpoint(&job, token, rows.step.as_ref(), name, output, now)?;
    let mut writes = Writes::default();
    if checkpoint.first {
        check_step_room(&rows, limits)?;
        writes.step(&job, &checkpoint.step);
        writes.audit(job.tenant_id, drafts::step_completed(&job, &checkpoint.step));
    }
    Ok(Decision {
        answer: checkpoint,
        writes,
    })
}

/// A running workflow waits in a step, for a time or a signal. `pending` is
/// the oldest unconsumed signal of the awaited name (loaded only for a
/// signal wait).
pub fn wait(
    rows: StepRows,
    pending: Option<PendingSignal>,
    token: &str,
    name: StepName,
    wait_for: WaitFor,
    limits: WorkflowLimits,
    now: Timestamp,
) -> Result<Decision<Waited>, StoreError> {
    let job = found(rows.job.clone())?;
    let outcome = lifecycle::wait(
        &job,
        token,
        name,
        wait_for,
        rows.step.as_ref(),
        pending.as_ref().map(|pending| &pending.signal),
        now,
    )?;
    if !matches!(outcome, WaitOutcome::AlreadyCompleted(_)) {
        check_step_room(&rows, limits)?;
    }
    let mut writes = Writes::default();
    let waited = match outcome {
        WaitOutcome::AlreadyCompleted(step) => Waited::Completed(step),
        WaitOutcome::Resolved { step, consumed_signal } => {
            writes.step(&job, &step);
            if let (true, Some(pending)) = (consumed_signal, pending) {
                writes.consumed_signals.push(ConsumedSignal {
                    tenant_id: job.tenant_id,
                    job_id: job.id,
                    seq: pending.seq,
                    at: now,
                });
            }
            writes.audit(job.tenant_id, drafts::step_completed(&job, &step));
            Waited::Completed(step)
        }
        WaitOutcome::Suspended(transition) => {
            writes.transition(&transition.job, transition.ended_attempt.as_ref());
            writes.audit(job.tenant_id, drafts::job_waiting(&job, &transition.job));
            Waited::Suspended(Box::new(transition.job))
        }
    };
    Ok(Decision { answer: waited, writes })
}

/// Delivers a signal: wakes the job if it waits for this name, otherwise
/// keeps it (up to `max_pending_signals` per job; `pending` is how many the
/// job holds now).
pub fn signal(
    job: Option<Job>,
    pending: u32,
    name: SignalName,
    payload: String,
    limits: WorkflowLimits,
    now: Timestamp,
) -> Result<Decision<Signalled>, StoreError> {
    let job = found(job)?;
    let signal = Signal {
        name,
        payload,
        received_at: now,
    };
    let mut writes = Writes::default();
    let (job, consumed_at) = match lifecycle::deliver_signal(&job, signal.clone(), now)? {
        Delivery::Woke { job, step } => {
            writes.changed_jobs.push((*job).clone());
            writes.step(&job, &step);
            (*job, Some(now))
        }
        Delivery::Stored => {
            if pending >= limits.max_pending_signals {
                return Err(StoreError::LimitExceeded {
                    what: "pending signals",
                    limit: limits.max_pending_signals,
                });
            }
            (job, None)
        }
    };
    let woke = consumed_at.is_some();
    writes.audit(
        job.tenant_id,
        drafts::signal_received(&job, signal.name.as_str(), &signal.payload, woke),
    );
    writes.signals.push(SignalWrite {
        tenant_id: job.tenant_id,
        job_id: job.id,
        signal,
        consumed_at,
    });
    Ok(Decision {
        answer: Signalled { job, woke },
        writes,
    })
}

/// Enqueues `child` from the parent's step, once per (parent, step):
/// `existing` is the child an earlier call made, `children` how many the
/// parent has. The lease is checked first: a fenced worker learns nothing,
/// not even the child.
#[allow(clippy::too_many_arguments)]
pub fn spawn_child(
    parent: Option<Job>,
    existing: Option<Job>,
    children: u32,
    token: &str,
    step: StepName,
    child: NewJob,
    limits: WorkflowLimits,
    now: Timestamp,
) -> Result<Decision<Enqueued>, StoreError> {
    let parent = found(parent)?;
    let candidate = lifecycle::spawn_child(&parent, token, step, child.id, child.spec, now)?;
    if let Some(job) = existing {
        return Ok(Decision::read_only(Enqueued { job, replayed: true }));
    }
    if children >= limits.max_children {
        return Err(StoreError::LimitExceeded {
            what: "children",
            limit: limits.max_children,
        });
    }
    let mut writes = Writes::default();
    writes.audit(parent.tenant_id, drafts::job_enqueued(&candidate));
    writes.audit(parent.tenant_id, drafts::child_spawned(&parent, &candidate));
    writes.new_jobs.push(candidate.clone());
    Ok(Decision {
        answer: Enqueued {
            job: candidate,
            replayed: false,
        },
        writes,
    })
}
