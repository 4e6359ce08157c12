//! The engine finds a lease that lapsed: the attempt failed.

use super::fail::end_and_reschedule;
use super::{Rejection, Transition};
use crate::{AttemptError, AttemptOutcome, Job, JobState, RetryPolicy, Timestamp};

/// Ends an attempt whose lease lapsed at or before `now`. It counts as a
/// failed attempt (`lease_expired`, or `timed_out` when the attempt reached its
/// deadline) and goes through the retry policy: a job is never stuck in `running`.
pub fn expire(job: &Job, policy: &RetryPolicy, jitter_sample: u64, now: Timestamp) -> Result<Transition, Rejection> {
    let lease = match (&job.lease, job.state) {
        (Some(lease), JobState::Running) => lease,
        _ => {
            return Err(Rejection::InvalidState {
                state: job.state,
                action: "expire",
            });
        }
    };
    if now < lease.expires_at {
        return Err(Rejection::NotDue);
    }
    let (outcome, message) = if lease.expires_at >= lease.deadline {
        (
            AttemptOutcome::TimedOut,
            "the attempt ran past its deadline (timeout_secs)",
        )
    } else {
        (
            AttemptOutcome::LeaseExpired,
            "the worker's lease expired without a heartbeat",
        )
    };
    let error = AttemptError {
        message: message.to_owned(),
        kind: Some(outcome.as_str().to_owned()),
    };
    Ok(end_and_reschedule(
        job,
        outcome,
        error,
        true,
        policy,
        jitter_sample,
        now,
        false,
    ))
}
