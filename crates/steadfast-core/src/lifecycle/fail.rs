//! A worker reports failure; the retry policy decides what happens next.

use std::time::Duration;

use super::{Rejection, Transition, end_attempt, require_live_lease};

use crate::{AttemptError, AttemptOutcome, Job, JobState, RetryPolicy, Timestamp};

/// The error kind with which a worker says the downstream refused for load:
/// the attempt is not spent (up to [`MAX_UNCOUNTED_ATTEMPTS`]).
pub const RATE_LIMITED: &str = "rate_limited";

/// A job's attempts that did not count (rate-limited failures, workflow
/// suspensions, earlier budgets) are at most this many; past it, a
/// rate-limited failure spends an attempt like any other, so no job is
/// retried forever.
pub const MAX_UNCOUNTED_ATTEMPTS: u32 = 10_000;

/// A worker's failure report.
#[derive(Debug, Clone)]
pub struct Failure {
    pub error: AttemptError,
    /// `false` sends the job to `dead` at once, whatever attempts are left.
    pub retryable: bool,
    /// The job waits at least this long before its next attempt (a
    /// downstream's `Retry-After`), whatever the backoff says.
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// Whether this failure leaves the job's attempts unspent.
    fn is_free(&self, job: &Job) -> bool {
        self.error.kind.as_deref() == Some(RATE_LIMITED) && job.uncounted_attempts < MAX_UNCOUNTED_ATTEMPTS
    }
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
    let free = failure.is_free(job);
    let mut transition = end_and_reschedule(
        job,
        AttemptOutcome::Failed,
        failure.error,
        failure.retryable,
        policy,
        jitter_sample,
        now,
        free,
    );
    if let (Some(wait), JobState::Scheduled | JobState::Queued) = (failure.retry_after, transition.job.state) {
        let not_before = now.saturating_add(wait).unwrap_or(Timestamp::MAX);
        if not_before > transition.job.run_at {
            transition.job.run_at = not_before;
            transition.job.state = JobState::Scheduled;
        }
    }
    Ok(transition)
}

/// Ends the running attempt with `outcome` and sends the job back through the
/// retry policy: `dead` when no attempt is left (or `retryable` is false),
/// otherwise `scheduled` for the backoff (or `queued` if the backoff is zero).
/// A `free` attempt is not counted against `max_attempts`.
#[allow(clippy::too_many_arguments)]
pub(super) fn end_and_reschedule(
    job: &Job,
    outcome: AttemptOutcome,
    error: AttemptError,
    retryable: bool,
    policy: &RetryPolicy,
    jitter_sample: u64,
    now: Timestamp,
    free: bool,
) -> Transition {
    let mut next = job.clone();
    let attempt = end_attempt(&mut next, outcome, Some(error.clone()), now);
    if free {
        next.uncounted_attempts += 1;
    }
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
