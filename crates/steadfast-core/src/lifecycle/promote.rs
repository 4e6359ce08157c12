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
