//! An operator cancels a job that has not finished.

use super::{Rejection, Transition, end_attempt};
use crate::{AttemptError, AttemptOutcome, Job, JobState, Timestamp};

/// Cancels a scheduled, queued, running or waiting job. A running attempt ends as
/// `cancelled` and its lease token stops working at once, so the worker's
/// later heartbeat or completion gets `lease_lost`.
pub fn cancel(job: &Job, now: Timestamp) -> Result<Transition, Rejection> {
    if job.state.is_terminal() {
        return Err(Rejection::InvalidState {
            state: job.state,
            action: "cancel",
        });
    }
    let mut next = job.clone();
    let ended_attempt = (job.state == JobState::Running).then(|| {
        let error = AttemptError {
            message: "cancelled by an operator".into(),
            kind: Some("cancelled".into()),
        };
        end_attempt(&mut next, AttemptOutcome::Cancelled, Some(error), now)
    });
    next.state = JobState::Cancelled;
    next.wait = None;
    next.updated_at = now;
    next.finished_at = Some(now);
    Ok(Transition {
        job: next,
        ended_attempt,
    })
}
