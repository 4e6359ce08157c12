//! An operator sends a dead or cancelled job back to the queue.

use super::Rejection;
use crate::{Job, JobState, Timestamp};

/// Queues the job now with a fresh budget of `max_attempts` attempts. Attempt
/// numbers keep counting up, so the history stays one unbroken sequence.
pub fn retry(job: &Job, now: Timestamp) -> Result<Job, Rejection> {
    if !matches!(job.state, JobState::Dead | JobState::Cancelled) {
        return Err(Rejection::InvalidState {
            state: job.state,
            action: "retry",
        });
    }
    let mut next = job.clone();
    next.state = JobState::Queued;
    next.uncounted_attempts = job.attempt;
    next.run_at = now;
    next.updated_at = now;
    next.finished_at = None;
    Ok(next)
}
