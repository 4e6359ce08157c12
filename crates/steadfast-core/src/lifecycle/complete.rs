//! A worker reports success.

use super::{Rejection, Transition, end_attempt, require_live_lease};
use crate::{AttemptOutcome, Job, JobState, Timestamp};

/// Finishes the job with `output` (JSON text). A lapsed or foreign lease
/// changes nothing: this is the fence that keeps a zombie worker from
/// overwriting the work of the attempt that replaced it.
pub fn complete(job: &Job, token: &str, output: String, now: Timestamp) -> Result<Transition, Rejection> {
    require_live_lease(job, token, now)?;
    let mut next = job.clone();
    let attempt = end_attempt(&mut next, AttemptOutcome::Succeeded, None, now);
    next.state = JobState::Succeeded;
    next.output = Some(output);
    next.updated_at = now;
    next.finished_at = Some(now);
    Ok(Transition {
        job: next,
        ended_attempt: Some(attempt),
    })
}
