//! A worker reports failure; the retry policy decides what happens next.

use super::{Rejection, Transition, end_attempt, require_live_lease};
use crate::{AttemptError, AttemptOutcome, Job, JobState, RetryPolicy, Timestamp};

/// A worker's failure report.
#[derive(Debug, Clone)]
pub struct Failure {
    pub error: AttemptError,
    /// `false` sends the job to `dead` at once, whatever attempts are left.
    pub retryable: bool,
}

pub fn fail(
    job: &Job,
    token: &str,
    failure: Failure,
    policy: &RetryPolicy,
    jitter_sample: u64,
    now: Timestamp,
) -> Result<Transition, Rejection> {
    require_live_lease(job, token, now)?;
    Ok(end_and_reschedule(
        job,
        AttemptOutcome::Failed,
        failure.error,
        failure.retryable,
        policy,
        jitter_sample,
        now,
    ))
}

/// Ends the running attempt with `outcome` and sends the job back through the
/// retry policy: `dead` when no attempt is left (or `retryable` is false),
/// otherwise `scheduled` for the backoff (or `queued` if the backoff is zero).
pub(super) fn end_and_reschedule(
    job: &Job,
    outcome: AttemptOutcome,
    error: AttemptError,
    retryable: bool,
    policy: &RetryPolicy,
    jitter_sample: u64,
    now: Timestamp,
) -> Transition {
    let mut next = job.clone();
    let attempt = end_attempt(&mut next, outcome, Some(error.clone()), now);
    next.last_error = Some(error);
    next.updated_at = now;
    if !retryable || next.attempts_left() == 0 {
        next.state = JobState::Dead;
        next.finished_at = Some(now);
    } else {
        let failures = next.attempt - next.uncounted_attempts;
        let delay = policy.delay(failures, jitter_sample);
        next.run_at = now.saturating_add(delay).expect("delay is capped");
        next.state = if next.run_at > now {
            JobState::Scheduled
        } else {
            JobState::Queued
        };
    }
    Transition {
        job: next,
        ended_attempt: Some(attempt),
    }
}
