//! A worker says it is still alive and extends its lease.

use std::time::Duration;

use super::{Rejection, require_live_lease};
use crate::{Job, Timestamp};

/// Extends the lease to `now + ttl`, never past the attempt's deadline.
pub fn heartbeat(job: &Job, token: &str, ttl: Duration, now: Timestamp) -> Result<Job, Rejection> {
    require_live_lease(job, token, now)?;
    let mut next = job.clone();
    let lease = next.lease.as_mut().expect("checked above");
    lease.expires_at = now.saturating_add(ttl).expect("ttl is bounded").min(lease.deadline);
    next.updated_at = now;
    Ok(next)
}
