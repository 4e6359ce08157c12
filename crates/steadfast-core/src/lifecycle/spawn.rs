//! A workflow step enqueues a child job.

use super::{JobSpec, Rejection, new_job, require_live_lease};
use crate::{IdempotencyKey, Job, JobId, ParentLink, StepName, Timestamp, step_key};

/// The child a running parent enqueues from step `step`. The store makes it
/// idempotent: one child per (parent, step), whatever the attempt.
pub fn spawn_child(
    parent: &Job,
    token: &str,
    step: StepName,
    child_id: JobId,
    spec: JobSpec,
    now: Timestamp,
) -> Result<Job, Rejection> {
    require_live_lease(parent, token, now)?;
    let mut child = new_job(child_id, parent.tenant_id, spec, now);
    child.idempotency_key = Some(IdempotencyKey::new(step_key(parent.id, &step)).expect("a step key is a valid key"));
    child.parent = Some(ParentLink {
        job_id: parent.id,
        step,
    });
    Ok(child)
}
