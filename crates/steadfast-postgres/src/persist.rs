//! Writing a decision's rows: the one place the PostgreSQL store turns
//! [`Writes`] into SQL. Each group is one set-based statement per tenant.

use crate::Transaction;
use steadfast_core::{TenantId, Timestamp};
use steadfast_store::StoreError;
use steadfast_store::decide::{Author, ClaimedKey, PayloadWrite, Writes};

use crate::audit::append;
use crate::bulk::save as save_bulk;
use crate::flow::{record_outcomes, save_flows};
use crate::rows::{insert_attempts, insert_jobs, millis, save_jobs};
use crate::workflows::{consume_signal, forget_steps, insert_signal, save_steps};
use crate::{after_failure, pg_error, set_tenant, statement};

/// Writes every group of `writes`, tenant by tenant, in the order of its
/// fields; `tenant` is the transaction's tenant setting, if it has one.
/// Row-level security checks every row against that setting, so the
/// writes of another tenant (a sweep's) switch it first.
pub(crate) async fn persist(
    tx: &Transaction,
    mut tenant: Option<TenantId>,
    writes: Writes,
    author: &Author,
    now: Timestamp,
) -> Result<(), StoreError> {
    for (owner, mut writes) in writes.by_tenant() {
        if tenant != Some(owner) {
            set_tenant(tx, owner).await?;
            tenant = Some(owner);
        }
        // Ended attempts of jobs that name a resource report to its breaker.
        record_outcomes(tx, owner, &mut writes, now).await?;
        let drafts = std::mem::take(&mut writes.audit).into_iter().map(|(_, draft)| draft);
        let rows = async {
            insert_jobs(tx, owner, &writes.new_jobs).await?;
            save_jobs(tx, owner, &writes.changed_jobs).await?;
            insert_attempts(tx, owner, &writes.attempts).await?;
            save_steps(tx, owner, &writes.steps).await?;
            forget_steps(tx, owner, &writes.forgotten_steps).await?;
            for consumed in &writes.consumed_signals {
                consume_signal(tx, consumed).await?;
            }
            for signal in &writes.signals {
                insert_signal(tx, signal).await?;
            }
            claim_keys(tx, owner, &writes.keys, now).await?;
            save_payloads(tx, owner, &writes.payloads).await?;
            save_flows(tx, owner, &writes.flow).await?;
            save_bulk(tx, &writes.bulk_operations).await
        };
        let audit = append(tx, owner, &author.actor, author.request_id.as_deref(), now, drafts);
        // The audit intake references no row, so its insert is sent with
        // the first row write rather than after the last: one round trip
        // less per operation. Whatever fails first aborts the transaction,
        // which then rolls back; statements after it are refused (25P02),
        // so the error to report is the first one.
        match futures::join!(rows, audit) {
            (Err(refused), Err(cause)) if after_failure(&refused) => Err(cause),
            (rows, audit) => rows.and(audit),
        }?;
    }
    Ok(())
}

/// The payloads singleton enqueues replaced, in one statement.
async fn save_payloads(tx: &Transaction, tenant: TenantId, payloads: &[PayloadWrite]) -> Result<(), StoreError> {
    if payloads.is_empty() {
        return Ok(());
    }
    tx.execute(
        &statement(
            tx,
            "UPDATE jobs SET payload = u.payload, schema_version = u.schema_version \
             FROM unnest($2::uuid[], $3::text[], $4::int4[]) AS u(id, payload, schema_version) \
             WHERE jobs.tenant_id = $1 AND jobs.id = u.id",
        )
        .await?,
        &[
            &tenant.0,
            &payloads.iter().map(|p| p.job_id.0).collect::<Vec<_>>(),
            &payloads.iter().map(|p| p.payload.as_str()).collect::<Vec<_>>(),
            &payloads
                .iter()
                .map(|p| p.schema_version.map(|v| v as i32))
                .collect::<Vec<_>>(),
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Claims idempotency keys for their jobs in one statement. The decision
/// saw no live claim on these keys, under their advisory locks; a claim
/// that is still live now was made by a node that takes no such lock (an
/// older release during a rolling upgrade): it is never overwritten, and
/// the enqueue fails (and rolls back) so the client's retry replays it.
async fn claim_keys(
    tx: &Transaction,
    tenant: TenantId,
    claims: &[ClaimedKey],
    now: Timestamp,
) -> Result<(), StoreError> {
    if claims.is_empty() {
        return Ok(());
    }
    let claimed = tx
        .execute(
            &statement(
                tx,
                "INSERT INTO idempotency_keys (tenant_id, key, job_id, fingerprint, expires_at) \
                 SELECT $1, * FROM unnest($2::text[], $3::uuid[], $4::bytea[], $5::bigint[]) \
                 ON CONFLICT (tenant_id, key) DO UPDATE SET job_id = excluded.job_id, \
                 fingerprint = excluded.fingerprint, expires_at = excluded.expires_at \
                 WHERE idempotency_keys.expires_at <= $6 OR NOT EXISTS (SELECT 1 FROM jobs \
                   WHERE jobs.tenant_id = idempotency_keys.tenant_id AND jobs.id = idempotency_keys.job_id)",
            )
            .await?,
            &[
                &tenant.0,
                &claims.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(),
                &claims.iter().map(|c| c.job_id.0).collect::<Vec<_>>(),
                &claims.iter().map(|c| c.fingerprint.as_slice()).collect::<Vec<_>>(),
                &claims.iter().map(|c| millis(c.expires_at)).collect::<Vec<_>>(),
                &millis(now),
            ],
        )
        .await
        .map_err(pg_error)?;
    if claimed != claims.len() as u64 {
        return Err(StoreError::Unavailable(
            "an idempotency key was claimed concurrently by a node without key locks; retry".into(),
        ));
    }
    Ok(())
}
