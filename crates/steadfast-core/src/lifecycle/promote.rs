//! A scheduled job's time has come.

use super::Rejection;
use crate::{Job, JobState, Timestamp};

pub fn promote(job: &Job, now: Timestamp) -> Result<Job, Rejection> {
    if job.state != JobState::Scheduled {
        return Err(Rejection::InvalidState {
            state: job.state,
            action: "promote",
        });
    }
    if job.run_at > now {
        return Err(Rejection::NotDue);
    }
    let mut next = job.clone();
    next.state = JobState::Queued;
    next.updated_at = now;
    Ok(next)
}

/// A queued job that flow control holds back (a retry over its queue's
/// retry budget) goes back to `scheduled` until `until`. Nothing about its
/// attempts changes: being held spends none.
pub fn defer(job: &Job, until: Timestamp, now: Timestamp) -> Result<Job, Rejection> {
    if job.state != JobState::Queued {
        return Err(Rejection::InvalidState {
            state: job.state,
            action: "defer",
        });
    }
    let mut next = job.clone();
    next.state = JobState::Scheduled;
    next.run_at = until.max(now);
    next.updated_at = now;
    Ok(next)
}
