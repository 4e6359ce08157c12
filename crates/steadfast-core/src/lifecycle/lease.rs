//! A worker takes a queued job.

use std::time::Duration;

use super::Rejection;
use crate::{Job, JobState, KeyId, Lease, Timestamp, WorkerId};

/// What the engine decided about a new lease: who holds it, for how long, and
/// the random part of its token.
#[derive(Debug, Clone)]
pub struct LeaseGrant {
    pub worker_id: WorkerId,
    pub key_id: KeyId,
    pub ttl: Duration,
    pub token_random: u64,
}

/// A token that names the attempt (job and attempt number) plus a random part,
/// so a token from an earlier attempt of the same job never matches.
pub fn lease_token(job: &Job, attempt: u32, random: u64) -> String {
    format!("lt_{}_{attempt}_{random:016x}", job.id.0.simple())
}

/// Starts the next attempt of a queued job.
pub fn lease(job: &Job, grant: LeaseGrant, now: Timestamp) -> Result<Job, Rejection> {
    if job.state != JobState::Queued {
        return Err(Rejection::InvalidState {
            state: job.state,
            action: "lease",
        });
    }
    let attempt = job.attempt + 1;
    let deadline = now.saturating_add(job.timeout).expect("timeout is bounded");
    let expires_at = now.saturating_add(grant.ttl).expect("ttl is bounded").min(deadline);
    let mut next = job.clone();
    next.state = JobState::Running;
    next.attempt = attempt;
    next.updated_at = now;
    next.lease = Some(Lease {
        token: lease_token(job, attempt, grant.token_random),
        worker_id: grant.worker_id,
        key_id: grant.key_id,
        started_at: now,
        expires_at,
        deadline,
    });
    Ok(next)
}
