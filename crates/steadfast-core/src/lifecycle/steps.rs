//! Memoized steps inside a running attempt.

use super::{Rejection, require_live_lease};
use crate::{Job, Step, StepName, Timestamp};

/// The answer to marking a step started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepStart {
    /// Already checkpointed (by this or an earlier attempt): do not run it again.
    AlreadyCompleted(Step),
    /// Recorded as started by the running attempt; persist it.
    Started(Step),
}

/// Marks `name` started before its side effect, so that if the attempt ends
/// before the checkpoint, the next attempt learns the outcome is uncertain.
pub fn start_step(
    job: &Job,
    token: &str,
    existing: Option<&Step>,
    name: StepName,
    now: Timestamp,
) -> Result<StepStart, Rejection> {
    require_live_lease(job, token, now)?;
    Ok(match existing {
        Some(step) if step.is_completed() => StepStart::AlreadyCompleted(step.clone()),
        _ => StepStart::Started(Step {
            name,
            attempt: job.attempt,
            started_at: now,
            completed_at: None,
            output: None,
        }),
    })
}

/// The answer to a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The stored step: the new one, or the one an earlier checkpoint stored.
    pub step: Step,
    /// This checkpoint wrote the step (persist it); `false` means an earlier one won.
    pub first: bool,
}

/// Persists a step's result. The first checkpoint of a step wins: a later one
/// gets the stored output back and changes nothing.
pub fn checkpoint(
    job: &Job,
    token: &str,
    existing: Option<&Step>,
    name: StepName,
    output: String,
    now: Timestamp,
) -> Result<Checkpoint, Rejection> {
    require_live_lease(job, token, now)?;
    if let Some(step) = existing.filter(|step| step.is_completed()) {
        return Ok(Checkpoint {
            step: step.clone(),
            first: false,
        });
    }
    let started_at = existing
        .filter(|step| step.attempt == job.attempt)
        .map_or(now, |step| step.started_at);
    let step = Step {
        name,
        attempt: job.attempt,
        started_at,
        completed_at: Some(now),
        output: Some(output),
    };
    Ok(Checkpoint { step, first: true })
}
