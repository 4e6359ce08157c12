//! An operator settles a step whose outcome is uncertain: the attempt that
//! started it ended before its checkpoint, and someone checked the
//! downstream by hand.

use super::{Rejection, Transition, end_attempt};
use crate::{AttemptError, AttemptOutcome, Job, JobState, Step, StepState, Timestamp};

/// What the operator found out about an uncertain step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResolution {
    /// The side effect happened: the step is completed with `output` (JSON
    /// text), and every later attempt replays it instead of running it.
    Succeeded { output: String },
    /// The side effect failed or must not happen: the job ends `dead` (a
    /// finished job stays as it is) and the step's marker is removed, so an
    /// operator's retry runs the step afresh.
    Failed,
    /// The side effect did not happen: the marker is removed and the next
    /// attempt runs the step as if for the first time.
    Reexecute,
}

impl StepResolution {
    pub fn as_str(&self) -> &'static str {
        match self {
            StepResolution::Succeeded { .. } => "succeeded",
            StepResolution::Failed => "failed",
            StepResolution::Reexecute => "reexecute",
        }
    }
}

/// What resolving a step changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The step completed by the resolution; `None` when its marker goes.
    pub step: Option<Step>,
    /// The job's transition, when the resolution ends it.
    pub transition: Option<Transition>,
}

/// Settles `step` of `job`, which must be uncertain. A succeeded job is
/// refused: nothing of it will run again, so nothing would read the answer.
pub fn resolve_step(
    job: &Job,
    step: &Step,
    resolution: &StepResolution,
    now: Timestamp,
) -> Result<Resolved, Rejection> {
    if step.state(job) != StepState::Uncertain || job.state == JobState::Succeeded {
        return Err(Rejection::InvalidState {
            state: job.state,
            action: "resolve a step that is not uncertain",
        });
    }
    Ok(match resolution {
        StepResolution::Succeeded { output } => Resolved {
            step: Some(Step {
                completed_at: Some(now),
                output: Some(output.clone()),
                ..step.clone()
            }),
            transition: None,
        },
        StepResolution::Reexecute => Resolved {
            step: None,
            transition: None,
        },
        StepResolution::Failed => Resolved {
            step: None,
            transition: (!job.state.is_terminal()).then(|| fail_for_step(job, step, now)),
        },
    })
}

/// The job ends `dead`: an operator declared one of its steps failed. A
/// running attempt ends as cancelled (its lease stops working at once).
fn fail_for_step(job: &Job, step: &Step, now: Timestamp) -> Transition {
    let error = AttemptError {
        message: format!("step {} was resolved as failed by an operator", step.name),
        kind: Some("step_failed".into()),
    };
    let mut next = job.clone();
    let ended_attempt = (job.state == JobState::Running)
        .then(|| end_attempt(&mut next, AttemptOutcome::Cancelled, Some(error.clone()), now));
    next.state = JobState::Dead;
    next.wait = None;
    next.last_error = Some(error);
    next.updated_at = now;
    next.finished_at = Some(now);
    Transition {
        job: next,
        ended_attempt,
    }
}
