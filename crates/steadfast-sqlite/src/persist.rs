//! Writing a decision's rows: the one place the embedded store turns
//! [`Writes`] into SQL, inside the writer's savepoint.

use rusqlite::{Connection, params};
use steadfast_core::Timestamp;
use steadfast_store::StoreError;
use steadfast_store::decide::{Author, ClaimedKey, Writes};

use crate::audit::append;
use crate::bulk::save as save_bulk;
use crate::flow::save_flow;
use crate::rows::{insert_attempt, insert_job, millis, save_job};
use crate::sqlite_error;
use crate::workflows::{consume_signal, forget_step, insert_signal, save_step};

/// Writes every group of `writes`, in the order of its fields; the audit
/// records name `author` and carry `now`.
pub(crate) fn persist(conn: &Connection, writes: &Writes, author: &Author, now: Timestamp) -> Result<(), StoreError> {
    for job in &writes.new_jobs {
        insert_job(conn, job)?;
    }
    for job in &writes.changed_jobs {
        save_job(conn, job)?;
    }
    for ended in &writes.attempts {
        insert_attempt(conn, ended)?;
    }
    for step in &writes.steps {
        save_step(conn, step)?;
    }
    for forgotten in &writes.forgotten_steps {
        forget_step(conn, forgotten)?;
    }
    for consumed in &writes.consumed_signals {
        consume_signal(conn, consumed)?;
    }
    for signal in &writes.signals {
        insert_signal(conn, signal)?;
    }
    for key in &writes.keys {
        claim_key(conn, key)?;
    }
    for write in &writes.payloads {
        conn.prepare_cached("UPDATE jobs SET payload = ?2, schema_version = ?3 WHERE id = ?1")
            .and_then(|mut update| {
                update.execute(params![write.job_id.to_string(), write.payload, write.schema_version])
            })
            .map_err(sqlite_error)?;
    }
    for write in &writes.flow {
        save_flow(conn, write)?;
    }
    for operation in &writes.bulk_operations {
        save_bulk(conn, operation)?;
    }
    for (tenant, drafts) in writes.audit_runs() {
        append(
            conn,
            tenant,
            &author.actor,
            author.request_id.as_deref(),
            now,
            drafts.into_iter().cloned(),
        )?;
    }
    Ok(())
}

/// Claims an idempotency key for its job, replacing a claim whose window passed.
fn claim_key(conn: &Connection, claim: &ClaimedKey) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys (tenant_id, key, job_id, fingerprint, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut upsert| {
        upsert.execute(params![
            claim.tenant_id.to_string(),
            claim.key.as_str(),
            claim.job_id.to_string(),
            claim.fingerprint.as_slice(),
            millis(claim.expires_at),
        ])
    })
    .map_err(sqlite_error)?;
    Ok(())
}
