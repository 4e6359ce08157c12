//! Creating, changing, pausing and deleting schedules.

use jiff::Timestamp;
use steadfast_core::audit::Draft;
use steadfast_core::{ScheduleName, TenantId};

use crate::StoreError;
use crate::audit::drafts;
use crate::schedules::{MAX_SCHEDULES_PER_TENANT, Schedule, ScheduleSpec};

/// A schedule created (within the tenant's bound) or replaced. A replaced
/// schedule keeps its history and whether it is paused; unless paused it
/// owes `next_fire_at`, worked out from the new pattern.
pub fn put_schedule(
    tenant: TenantId,
    name: &ScheduleName,
    existing: Option<Schedule>,
    kept: usize,
    spec: ScheduleSpec,
    next_fire_at: Timestamp,
    now: Timestamp,
) -> Result<(Schedule, bool, Draft), StoreError> {
    let draft = drafts::schedule_set(name, existing.as_ref().map(|s| &s.spec), &spec);
    let created = existing.is_none();
    let schedule = match existing {
        Some(existing) => Schedule {
            next_fire_at: (!existing.paused).then_some(next_fire_at),
            spec,
            updated_at: now,
            ..existing
        },
        None if kept >= MAX_SCHEDULES_PER_TENANT => {
            return Err(StoreError::LimitExceeded {
                what: "schedules per tenant",
                limit: MAX_SCHEDULES_PER_TENANT as u32,
            });
        }
        None => Schedule {
            tenant_id: tenant,
            name: name.clone(),
            spec,
            paused: false,
            next_fire_at: Some(next_fire_at),
            last_tick_at: None,
            last_outcome: None,
            last_job_id: None,
            created_at: now,
            updated_at: now,
        },
    };
    Ok((schedule, created, draft))
}

/// Pauses or resumes. A resumed schedule owes `next_fire_at` (the first
/// tick after now): ticks that passed while it was paused are not missed,
/// they were not wanted.
pub fn pause_schedule(
    existing: Option<Schedule>,
    paused: bool,
    next_fire_at: Timestamp,
    now: Timestamp,
) -> Result<(Schedule, Option<Draft>), StoreError> {
    let existing = existing.ok_or(StoreError::NotFound)?;
    if existing.paused == paused {
        return Ok((existing, None));
    }
    let draft = drafts::schedule_paused(&existing.name, paused);
    Ok((
        Schedule {
            paused,
            next_fire_at: (!paused).then_some(next_fire_at),
            updated_at: now,
            ..existing
        },
        Some(draft),
    ))
}

/// The record of a deletion; `NotFound` if there was nothing to delete.
pub fn delete_schedule(existing: Option<Schedule>) -> Result<Draft, StoreError> {
    let existing = existing.ok_or(StoreError::NotFound)?;
    Ok(drafts::schedule_deleted(&existing.name, &existing.spec))
}
