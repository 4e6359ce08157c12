//! Durable sleeps and signals: a workflow parks its job until a time or a
//! named signal, holding no lease; the timer, the signal or the deadline
//! completes the waiting step and queues the job again.

use super::{Rejection, Transition, end_attempt, require_live_lease};
use crate::{AttemptOutcome, Job, JobState, Signal, Step, StepName, Timestamp, Wait, WaitFor};

/// How a wait ended; becomes the waiting step's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitResult {
    Slept,
    Signalled(Signal),
    TimedOut,
}

impl WaitResult {
    /// The step output, JSON text: `{"outcome": "slept" | "signal" | "timed_out"}`,
    /// with the signal's `payload` for a signal. Built, never parsed: the
    /// payload is JSON text that was validated when it arrived.
    pub fn output(&self) -> String {
        match self {
            WaitResult::Slept => r#"{"outcome":"slept"}"#.to_owned(),
            WaitResult::TimedOut => r#"{"outcome":"timed_out"}"#.to_owned(),
            WaitResult::Signalled(signal) => format!(r#"{{"outcome":"signal","payload":{}}}"#, signal.payload),
        }
    }
}

/// The answer to a wait request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The step was completed earlier: replay its output, keep running.
    AlreadyCompleted(Step),
    /// Nothing to wait for (the time has passed, or the signal is already
    /// here): the step completes now and the attempt keeps running.
    Resolved { step: Step, consumed_signal: bool },
    /// The attempt ends and the job waits.
    Suspended(Box<Transition>),
}

/// A running workflow asks to wait in step `step`. `pending_signal` is the
/// oldest unconsumed signal of the awaited name, if any.
pub fn wait(
    job: &Job,
    token: &str,
    step: StepName,
    wait_for: WaitFor,
    existing: Option<&Step>,
    pending_signal: Option<&Signal>,
    now: Timestamp,
) -> Result<WaitOutcome, Rejection> {
    require_live_lease(job, token, now)?;
    if let Some(done) = existing.filter(|step| step.is_completed()) {
        return Ok(WaitOutcome::AlreadyCompleted(done.clone()));
    }
    let resolved = |result: WaitResult, consumed_signal| WaitOutcome::Resolved {
        step: Step {
            name: step.clone(),
            attempt: job.attempt,
            started_at: now,
            completed_at: Some(now),
            output: Some(result.output()),
        },
        consumed_signal,
    };
    match (&wait_for, pending_signal) {
        (WaitFor::Until(at), _) if *at <= now => return Ok(resolved(WaitResult::Slept, false)),
        (WaitFor::Signal { .. }, Some(signal)) => return Ok(resolved(WaitResult::Signalled(signal.clone()), true)),
        (WaitFor::Signal { deadline: Some(at), .. }, None) if *at <= now => {
            return Ok(resolved(WaitResult::TimedOut, false));
        }
        _ => {}
    }
    let mut next = job.clone();
    let attempt = end_attempt(&mut next, AttemptOutcome::Suspended, None, now);
    next.uncounted_attempts += 1;
    next.state = JobState::Waiting;
    next.wait = Some(Wait { step, wait_for });
    next.updated_at = now;
    Ok(WaitOutcome::Suspended(Box::new(Transition {
        job: next,
        ended_attempt: Some(attempt),
    })))
}

/// Ends a wait with `result`: the job is queued again and the waiting step
/// is completed with the result as its output.
fn resume(job: &Job, result: WaitResult, now: Timestamp) -> (Job, Step) {
    let wait = job.wait.clone().expect("a waiting job has a wait");
    let step = Step {
        name: wait.step,
        attempt: job.attempt,
        // The wait began when the job was suspended, its last update.
        started_at: job.updated_at,
        completed_at: Some(now),
        output: Some(result.output()),
    };
    let mut next = job.clone();
    next.state = JobState::Queued;
    next.wait = None;
    next.run_at = now;
    next.updated_at = now;
    (next, step)
}

/// The duties found a wait whose deadline has come.
pub fn fire_wait_timer(job: &Job, now: Timestamp) -> Result<(Job, Step), Rejection> {
    let Some(wait) = job.wait.as_ref().filter(|_| job.state == JobState::Waiting) else {
        return Err(Rejection::InvalidState {
            state: job.state,
            action: "wake",
        });
    };
    match wait.deadline() {
        Some(deadline) if deadline <= now => {
            let result = match wait.wait_for {
                WaitFor::Until(_) => WaitResult::Slept,
                WaitFor::Signal { .. } => WaitResult::TimedOut,
            };
            Ok(resume(job, result, now))
        }
        _ => Err(Rejection::NotDue),
    }
}

/// What delivering a signal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The job was waiting for it: the step is completed and the job queued.
    Woke { job: Box<Job>, step: Step },
    /// Kept until a wait for this name consumes it.
    Stored,
}

/// A signal arrives for `job`. Finished jobs take no signals.
pub fn deliver_signal(job: &Job, signal: Signal, now: Timestamp) -> Result<Delivery, Rejection> {
    if job.state.is_terminal() {
        return Err(Rejection::InvalidState {
            state: job.state,
            action: "receive signals",
        });
    }
    let waiting_for_it = matches!(
        &job.wait,
        Some(Wait { wait_for: WaitFor::Signal { name, .. }, .. }) if job.state == JobState::Waiting && *name == signal.name
    );
    if !waiting_for_it {
        return Ok(Delivery::Stored);
    }
    let (job, step) = resume(job, WaitResult::Signalled(signal), now);
    Ok(Delivery::Woke {
        job: Box::new(job),
        step,
    })
}
