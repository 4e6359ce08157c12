//! Decisions of durable workflows: steps, waits, signals and child jobs,
//! with the per-job limits that bound each.

use std::collections::HashMap;

use steadfast_core::lifecycle::{self, Checkpoint, Delivery, StepResolution, StepStart, WaitOutcome};
use steadfast_core::{Job, JobId, Reason, Signal, SignalName, Step, StepName, Timestamp, WaitFor};

use super::{ConsumedSignal, Decision, ForgottenStep, PendingSignal, SignalWrite, Writes, found};
use crate::audit::drafts;
use crate::{Enqueued, NewJob, Signalled, StepAction, StepDone, StepOp, StoreError, Waited, WorkflowLimits};

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
            what: "steps per job",
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

/// Decides each item of a batch as [`start_step`] or [`checkpoint_step`]
/// would, in order. `rows` holds each item's rows as loaded before the
/// batch; what an earlier item recorded (a step, the step count) overrides
/// them, so a job may appear more than once.
pub fn step_many(
    ops: Vec<StepOp>,
    rows: Vec<StepRows>,
    limits: WorkflowLimits,
    now: Timestamp,
) -> Decision<Vec<Result<StepDone, StoreError>>> {
    let mut recorded: HashMap<(JobId, StepName), Step> = HashMap::new();
    let mut added: HashMap<JobId, u32> = HashMap::new();
    let mut writes = Writes::default();
    let mut results = Vec::with_capacity(ops.len());
    for (op, mut rows) in ops.into_iter().zip(rows) {
        if let Some(step) = recorded.get(&(op.id, op.step.clone())) {
            rows.step = Some(step.clone());
        }
        rows.step_count += added.get(&op.id).copied().unwrap_or(0);
        let new_step = rows.step.is_none();
        let decided = match op.action {
            StepAction::Start => start_step(rows, &op.token, op.step, limits, now).map(|d| d.map(StepDone::Started)),
            StepAction::Checkpoint { output } => {
                checkpoint_step(rows, &op.token, op.step, output, limits, now).map(|d| d.map(StepDone::Checkpointed))
            }
        };
        results.push(decided.map(|decision| {
            for write in &decision.writes.steps {
                if new_step {
                    *added.entry(write.job_id).or_default() += 1;
                }
                recorded.insert((write.job_id, write.step.name.clone()), write.step.clone());
            }
            writes.absorb(decision.writes);
            decision.answer
        }));
    }
    Decision {
        answer: results,
        writes,
    }
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
#[allow(clippy::too_many_arguments)]
pub fn signal(
    job: Option<Job>,
    pending: u32,
    name: SignalName,
    payload: String,
    reason: Option<&Reason>,
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
                    what: "pending signals per job",
                    limit: limits.max_pending_signals,
                });
            }
            (job, None)
        }
    };
    let woke = consumed_at.is_some();
    writes.audit(
        job.tenant_id,
        drafts::signal_received(&job, signal.name.as_str(), &signal.payload, woke, reason),
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

/// Operator action: settles `step`, an uncertain step of `job` (see
/// [`lifecycle::resolve_step`]); answers the job as it is afterwards.
pub fn resolve_step(
    job: Option<Job>,
    step: Option<Step>,
    resolution: &StepResolution,
    reason: &Reason,
    now: Timestamp,
) -> Result<Decision<Job>, StoreError> {
    let before = found(job)?;
    let step = step.ok_or(StoreError::NotFound)?;
    let resolved = lifecycle::resolve_step(&before, &step, resolution, now)?;
    let mut writes = Writes::default();
    let after = match resolved.transition {
        Some(transition) => {
            writes.transition(&transition.job, transition.ended_attempt.as_ref());
            transition.job
        }
        None => before.clone(),
    };
    match resolved.step {
        Some(completed) => writes.step(&after, &completed),
        None => writes.forgotten_steps.push(ForgottenStep {
            tenant_id: after.tenant_id,
            job_id: after.id,
            name: step.name.clone(),
        }),
    }
    writes.audit(
        after.tenant_id,
        drafts::step_resolved(&before, &after, &step, resolution, reason),
    );
    Ok(Decision { answer: after, writes })
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
        return Ok(Decision::read_only(Enqueued::replayed(job)));
    }
    if children >= limits.max_children {
        return Err(StoreError::LimitExceeded {
            what: "children per job",
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
            singleton: None,
        },
        writes,
    })
}
