//! Every move a job can make, one file per lifecycle event. Each is a pure
//! function of the job, the request and the time; none of them performs the
//! move: the caller persists what they return.

mod cancel;
mod complete;
mod enqueue;
mod expire;
mod fail;
mod heartbeat;
mod lease;
mod promote;
mod release;
mod resolve;
mod retry;
mod spawn;
mod steps;
mod wait;

pub use cancel::cancel;
pub use complete::complete;
pub use enqueue::{
    DEFAULT_DEBOUNCE_MAX_FACTOR, Debounce, EnqueueRequest, Fingerprint, InvalidRequest, JobSpec, Singleton,
    SingletonMode, new_job, producer_key, replace_payload, replay,
};
pub use expire::expire;
pub use fail::{Failure, MAX_UNCOUNTED_ATTEMPTS, RATE_LIMITED, fail};
pub use heartbeat::heartbeat;
pub use lease::{LeaseGrant, lease, lease_token};
pub use promote::{defer, promote};
pub use release::release;
pub use resolve::{Resolved, StepResolution, resolve_step};
pub use retry::retry;
pub use spawn::spawn_child;
pub use steps::{Checkpoint, StepStart, checkpoint, start_step};
pub use wait::{Delivery, WaitOutcome, WaitResult, deliver_signal, fire_wait_timer, wait};

use crate::{Attempt, Job, JobState};

/// Why a transition was refused. The job is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The presented lease token is not the job's current one, or the lease lapsed.
    #[error("the lease is no longer held")]
    LeaseLost,
    /// The job is not in a state this action applies to.
    #[error("job is {state}; cannot {action}")]
    InvalidState { state: JobState, action: &'static str },
    /// A background duty found nothing due on this job (a race it may ignore).
    #[error("not due")]
    NotDue,
}

/// A job after a transition, plus the attempt that ended with it, if one did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub job: Job,
    pub ended_attempt: Option<Attempt>,
}

/// Ends the running attempt of `job` and returns it as history.
fn end_attempt(
    job: &mut Job,
    outcome: crate::AttemptOutcome,
    error: Option<crate::AttemptError>,
    now: crate::Timestamp,
) -> Attempt {
    let lease = job.lease.take().expect("a running job has a lease");
    Attempt {
        number: job.attempt,
        worker_id: lease.worker_id,
        key_id: lease.key_id,
        started_at: lease.started_at,
        ended_at: now,
        outcome,
        error,
    }
}

/// Holds the running lease named by `token`, still live at `now`.
fn require_live_lease(job: &Job, token: &str, now: crate::Timestamp) -> Result<(), Rejection> {
    match &job.lease {
        Some(lease) if job.state == JobState::Running && lease.token == token && now < lease.expires_at => Ok(()),
        _ => Err(Rejection::LeaseLost),
    }
}

#[cfg(test)]
mod tests;
