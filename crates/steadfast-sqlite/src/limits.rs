use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use steadfast_core::audit::Actor;
use steadfast_core::{QueueName, TenantId, Timestamp};
use steadfast_store::audit::drafts;
use steadfast_store::{LimitStore, PruneCutoffs, QueueRetention, StoreError, TenantLimits, TenantScope};

use crate::audit::{append, append_for};
use crate::rows::{millis, query_all};
use crate::{SqliteStore, sqlite_error};

fn corrupt(error: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, error.to_string().into())
}

fn tenant_id(text: String) -> rusqlite::Result<TenantId> {
    text.parse().map_err(corrupt)
}

fn queue_name(text: String) -> rusqlite::Result<QueueName> {
    QueueName::new(text).map_err(corrupt)
}

/// A queue's finished jobs past their cutoff (?3, ?4: the succeeded and
/// failed cutoffs in ms), oldest first, at most ?5, except those still
/// needed: a child whose parent is still there (the parent may run its
/// step again, even after an operator's retry, and must find the same
/// child), and a job whose idempotency key is still live at ?6 (a retry
/// with the key must get the same job).
const PRUNABLE: &str = "SELECT j.id, j.idempotency_key FROM jobs j \
     WHERE j.tenant_id = ?1 AND j.queue = ?2 AND j.finished_at IS NOT NULL \
       AND ((j.state = 'succeeded' AND j.finished_at < ?3) OR (j.state IN ('dead', 'cancelled') AND j.finished_at < ?4)) \
       AND NOT EXISTS (SELECT 1 FROM jobs p WHERE p.id = j.parent_id) \
       AND NOT EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.tenant_id = j.tenant_id \
                       AND k.key = j.idempotency_key AND k.job_id = j.id AND k.expires_at > ?6) \
     ORDER BY j.finished_at LIMIT ?5";

#[async_trait]
impl LimitStore for SqliteStore {
    async fn set_tenant_limits(
        &self,
        tenant: TenantId,
        limits: TenantLimits,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.writer()
            .write(move |conn| {
                let changed = conn
                    .execute(
                        "UPDATE tenants SET key_rate_limit = ?2, key_rate_burst = ?3, max_unfinished_jobs = ?4 \
                         WHERE id = ?1",
                        params![
                            tenant.to_string(),
                            limits.key_rate.map(|(rate, _)| rate),
                            limits.key_rate.map(|(_, burst)| burst),
                            limits.max_unfinished_jobs.map(|max| max as i64)
                        ],
                    )
                    .map_err(sqlite_error)?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                append(
                    conn,
                    tenant,
                    &Actor::Operator,
                    None,
                    now,
                    [drafts::tenant_limits_set(limits)],
                )
            })
            .await
    }

    async fn tenant_limits(&self) -> Result<Vec<(TenantId, TenantLimits)>, StoreError> {
        self.readers()
            .read(|conn| {
                query_all(
                    conn,
                    "SELECT id, key_rate_limit, key_rate_burst, max_unfinished_jobs FROM tenants \
                     WHERE key_rate_limit IS NOT NULL OR max_unfinished_jobs IS NOT NULL",
                    [],
                    |row| {
                        let rate: Option<u32> = row.get(1)?;
                        let burst: Option<u32> = row.get(2)?;
                        let max: Option<i64> = row.get(3)?;
                        Ok((
                            tenant_id(row.get(0)?)?,
                            TenantLimits {
                                key_rate: rate.zip(burst),
                                max_unfinished_jobs: max.map(|max| max.max(0) as u64),
                            },
                        ))
                    },
                )
            })
            .await
    }

    async fn set_queue_retention(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        retention: QueueRetention,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let scope = scope.clone();
        let queue = queue.clone();
        self.writer()
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO queue_settings (tenant_id, queue, retain_succeeded_ms, retain_failed_ms, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant_id, queue) DO UPDATE SET \
                     retain_succeeded_ms = excluded.retain_succeeded_ms, retain_failed_ms = excluded.retain_failed_ms, \
                     updated_at = excluded.updated_at",
                    params![
                        scope.tenant_id().to_string(),
                        queue.as_str(),
                        retention.columns().0,
                        retention.columns().1,
                        millis(now)
                    ],
                )
                .map_err(sqlite_error)?;
                append_for(conn, &scope, now, [drafts::queue_retention_set(&queue, retention)])
            })
            .await
    }

    async fn queue_retention(&self, scope: &TenantScope, queue: &QueueName) -> Result<QueueRetention, StoreError> {
        let tenant = scope.tenant_id().to_string();
        let queue = queue.to_string();
        self.readers()
            .read(move |conn| {
                conn.query_row(
                    "SELECT retain_succeeded_ms, retain_failed_ms FROM queue_settings WHERE tenant_id = ?1 AND queue = ?2",
                    params![tenant, queue],
                    |row| {
                        Ok(QueueRetention::from_columns(row.get(0)?, row.get(1)?))
                    },
                )
                .optional()
                .map(Option::unwrap_or_default)
                .map_err(sqlite_error)
            })
            .await
    }

    async fn queue_retentions(&self) -> Result<Vec<(TenantId, QueueName, QueueRetention)>, StoreError> {
        self.readers()
            .read(|conn| {
                query_all(
                    conn,
                    "SELECT tenant_id, queue, retain_succeeded_ms, retain_failed_ms FROM queue_settings \
                     WHERE retain_succeeded_ms IS NOT NULL OR retain_failed_ms IS NOT NULL",
                    [],
                    |row| {
                        Ok((
                            tenant_id(row.get(0)?)?,
                            queue_name(row.get(1)?)?,
                            QueueRetention::from_columns(row.get(2)?, row.get(3)?),
                        ))
                    },
                )
            })
            .await
    }

    async fn job_queues(&self) -> Result<Vec<(TenantId, QueueName)>, StoreError> {
        self.readers()
            .read(|conn| {
                // A loose index scan of jobs_by_queue: each step seeks the
                // next (tenant, queue) after the last one found.
                query_all(
                    conn,
                    "WITH RECURSIVE pairs (tenant_id, queue) AS ( \
                         SELECT * FROM (SELECT tenant_id, queue FROM jobs ORDER BY tenant_id, queue LIMIT 1) \
                         UNION ALL \
                         SELECT (SELECT j.tenant_id FROM jobs j WHERE (j.tenant_id, j.queue) > (p.tenant_id, p.queue) \
                                 ORDER BY j.tenant_id, j.queue LIMIT 1), \
                                (SELECT j.queue FROM jobs j WHERE (j.tenant_id, j.queue) > (p.tenant_id, p.queue) \
                                 ORDER BY j.tenant_id, j.queue LIMIT 1) \
                         FROM pairs p WHERE p.tenant_id IS NOT NULL) \
                     SELECT tenant_id, queue FROM pairs WHERE tenant_id IS NOT NULL",
                    [],
                    |row| Ok((tenant_id(row.get(0)?)?, queue_name(row.get(1)?)?)),
                )
            })
            .await
    }

    async fn prune_jobs(
        &self,
        tenant: TenantId,
        queue: &QueueName,
        cutoffs: PruneCutoffs,
        limit: usize,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let queue = queue.clone();
        self.writer()
            .write(move |conn| {
                let args = params![
                    tenant.to_string(),
                    queue.as_str(),
                    millis(cutoffs.succeeded_before),
                    millis(cutoffs.failed_before),
                    limit as i64,
                    millis(now)
                ];
                conn.execute_batch("CREATE TEMP TABLE IF NOT EXISTS pruned (id TEXT PRIMARY KEY, key TEXT)")
                    .and_then(|()| conn.execute("DELETE FROM temp.pruned", []))
                    .and_then(|_| conn.execute(&format!("INSERT INTO temp.pruned (id, key) {PRUNABLE}"), args))
                    .map_err(sqlite_error)?;
                let removed = conn
                    .execute_batch(
                        "DELETE FROM attempts WHERE job_id IN (SELECT id FROM temp.pruned); \
                         DELETE FROM steps WHERE job_id IN (SELECT id FROM temp.pruned); \
                         DELETE FROM signals WHERE job_id IN (SELECT id FROM temp.pruned);",
                    )
                    .and_then(|()| {
                        conn.execute(
                            "DELETE FROM idempotency_keys WHERE tenant_id = ?1 AND (key, job_id) IN \
                             (SELECT key, id FROM temp.pruned WHERE key IS NOT NULL)",
                            [tenant.to_string()],
                        )
                    })
                    .and_then(|_| conn.execute("DELETE FROM jobs WHERE id IN (SELECT id FROM temp.pruned)", []))
                    .map_err(sqlite_error)?;
                if removed > 0 {
                    let draft = drafts::jobs_pruned(&queue, removed, cutoffs);
                    append(conn, tenant, &Actor::System, None, now, [draft])?;
                }
                Ok(removed)
            })
            .await
    }

    async fn unfinished_counts(&self) -> Result<Vec<(TenantId, u64)>, StoreError> {
        self.readers()
            .read(|conn| {
                query_all(
                    conn,
                    "SELECT tenant_id, count(*) FROM jobs \
                     WHERE state IN ('scheduled', 'queued', 'running', 'waiting') GROUP BY tenant_id",
                    [],
                    |row| Ok((tenant_id(row.get(0)?)?, row.get::<_, i64>(1)? as u64)),
                )
            })
            .await
    }
}
