//! What one batch of a bulk operation does: each job as the single
//! operator action would, tagged with the operation; the operation's
//! progress; and its end once no job is left.

use std::collections::HashSet;

use serde_json::Value;
use steadfast_core::{FlowKey, Job, JobId, QueueName, Timestamp};

use super::{Decision, Writes, jobs};
use crate::StoreError;
use crate::audit::drafts;
use crate::bulk::{BulkAction, BulkFailure, BulkOperation, BulkStatus, MAX_KEPT_FAILURES};

/// A job the walk reached: its position, and the job as the batch locked
/// it (`None` if it was deleted in between), with, for a retry, whether
/// another unfinished job now holds its singleton key.
#[derive(Debug, Clone)]
pub struct BulkCandidate {
    pub seq: i64,
    pub id: JobId,
    pub job: Option<Job>,
    pub singleton_taken: bool,
}

/// Acts on `walked` (the next at most `batch` matching jobs after the
/// cursor, in `seq` order): each is retried or cancelled exactly as the
/// single action would, audited with the operation's reason and id, or
/// counted as a failure with why (it changed state since the walk read it,
/// it is gone, or a retry would give its singleton key a second
/// unfinished job). Fewer than `batch` means the walk is over.
pub fn bulk_step(
    mut operation: BulkOperation,
    walked: Vec<BulkCandidate>,
    batch: u32,
    now: Timestamp,
) -> Result<Decision<BulkOperation>, StoreError> {
    if operation.status != BulkStatus::Running {
        return Ok(Decision::read_only(operation));
    }
    let reason = operation.reason()?;
    let finished = walked.len() < batch as usize;
    if let Some(last) = walked.last() {
        operation.cursor_seq = last.seq;
    }
    let mut writes = Writes::default();
    // Singleton keys this batch gave an unfinished job: a second job of the
    // same key in the batch would be the key's second.
    let mut singletons: HashSet<(QueueName, FlowKey)> = HashSet::new();
    for candidate in walked {
        let decided = match candidate.job {
            None => Err(StoreError::NotFound),
            Some(job) => match operation.spec.action {
                BulkAction::Retry => {
                    let key = job.singleton_key.clone().map(|key| (job.queue.clone(), key));
                    let taken = candidate.singleton_taken || key.as_ref().is_some_and(|k| singletons.contains(k));
                    let retried = jobs::retry(Some(job), taken, Some(&reason), now).map(|d| d.writes);
                    if let (Ok(_), Some(key)) = (&retried, key) {
                        singletons.insert(key);
                    }
                    retried
                }
                BulkAction::Cancel => jobs::cancel(Some(job), Some(&reason), now).map(|d| d.writes),
            },
        };
        match decided {
            Ok(mut moved) => {
                tag(&mut moved, operation.id);
                writes.absorb(moved);
                operation.done += 1;
            }
            Err(error) => {
                operation.failed += 1;
                if operation.failures.len() < MAX_KEPT_FAILURES {
                    let error = match error {
                        StoreError::NotFound => "the job no longer exists".to_owned(),
                        other => other.to_string(),
                    };
                    operation.failures.push(BulkFailure {
                        job_id: candidate.id.to_string(),
                        error,
                    });
                }
            }
        }
    }
    operation.updated_at = now;
    if finished {
        operation.status = BulkStatus::Completed;
        operation.finished_at = Some(now);
        writes.audit(operation.tenant_id, drafts::bulk_changed("bulk.completed", &operation));
    }
    writes.bulk_operations.push(operation.clone());
    Ok(Decision {
        answer: operation,
        writes,
    })
}

/// Names the operation in each of its jobs' audit records.
fn tag(writes: &mut Writes, operation: uuid::Uuid) {
    for (_, draft) in &mut writes.audit {
        if let Ok(Value::Object(mut summary)) = serde_json::from_str::<Value>(&draft.summary) {
            summary.insert("bulk_operation".into(), operation.to_string().into());
            draft.summary = Value::Object(summary).to_string();
        }
    }
}

/// Records a new operation over `matched` jobs (those with `seq` up to
/// `through_seq`), unless the tenant already runs `running` operations, as
/// many as it may.
pub fn start_bulk(
    tenant: steadfast_core::TenantId,
    new: crate::bulk::NewBulk,
    matched: u64,
    through_seq: i64,
    running: u64,
    now: Timestamp,
) -> Result<Decision<BulkOperation>, StoreError> {
    if running >= crate::bulk::MAX_RUNNING_PER_TENANT {
        return Err(StoreError::LimitExceeded {
            what: "bulk operations running at once per tenant",
            limit: crate::bulk::MAX_RUNNING_PER_TENANT as u32,
        });
    }
    let operation = BulkOperation {
        id: new.id,
        tenant_id: tenant,
        spec: new.spec,
        status: BulkStatus::Running,
        matched,
        done: 0,
        failed: 0,
        failures: Vec::new(),
        through_seq,
        cursor_seq: 0,
        created_at: now,
        updated_at: now,
        finished_at: None,
    };
    let mut writes = Writes::default();
    operation.reason()?;
    writes.audit(tenant, drafts::bulk_changed("bulk.started", &operation));
    writes.bulk_operations.push(operation.clone());
    Ok(Decision {
        answer: operation,
        writes,
    })
}

/// Stops a running operation; a finished one is answered as it is.
pub fn cancel_bulk(operation: Option<BulkOperation>, now: Timestamp) -> Result<Decision<BulkOperation>, StoreError> {
    let mut operation = operation.ok_or(StoreError::NotFound)?;
    if operation.status != BulkStatus::Running {
        return Ok(Decision::read_only(operation));
    }
    operation.status = BulkStatus::Cancelled;
    operation.updated_at = now;
    operation.finished_at = Some(now);
    let mut writes = Writes::default();
    writes.audit(operation.tenant_id, drafts::bulk_changed("bulk.cancelled", &operation));
    writes.bulk_operations.push(operation.clone());
    Ok(Decision {
        answer: operation,
        writes,
    })
}
