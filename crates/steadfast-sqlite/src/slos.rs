use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use steadfast_core::slo::{Counts, Severity, Slo, SloKind};
use steadfast_core::{QueueName, Timestamp};
use steadfast_store::audit::drafts;
use steadfast_store::decide;
use steadfast_store::{SloRecord, SloStore, StoreError, TenantScope};

use crate::audit::append_for;
use crate::rows::{millis, optional_timestamp, query_all, timestamp};
use crate::{SqliteStore, sqlite_error};

const COLUMNS: &str = "id, tenant_id, name, queue, kind, threshold_ms, objective, window_ms, notify_url, created_at, page_since, ticket_since";

fn text_error(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<SloRecord> {
    let kind = SloKind::from_parts(&row.get::<_, String>(4)?, row.get(5)?);
    let slo = Slo {
        id: row.get::<_, String>(0)?.parse().map_err(text_error)?,
        tenant_id: row.get::<_, String>(1)?.parse().map_err(text_error)?,
        name: row.get(2)?,
        queue: QueueName::new(row.get::<_, String>(3)?).map_err(text_error)?,
        kind,
        objective: row.get(6)?,
        window: Duration::from_millis(row.get::<_, i64>(7)?.max(0) as u64),
        notify_url: row.get(8)?,
        created_at: timestamp(row.get(9)?)?,
    };
    Ok(SloRecord::new(
        slo,
        optional_timestamp(row.get(10)?)?,
        optional_timestamp(row.get(11)?)?,
    ))
}

fn load(conn: &Connection, scope: &TenantScope, id: uuid::Uuid) -> Result<SloRecord, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM slos WHERE tenant_id = ?1 AND id = ?2"),
        params![scope.tenant_id().to_string(), id.to_string()],
        record_from_row,
    )
    .optional()
    .map_err(sqlite_error)?
    .ok_or(StoreError::NotFound)
}

#[async_trait]
impl SloStore for SqliteStore {
    async fn create_slo(&self, scope: &TenantScope, slo: Slo, now: Timestamp) -> Result<Slo, StoreError> {
        let scope = scope.clone();
        self.writer()
            .write(move |conn| {
                let (kind, threshold) = slo.kind.to_parts();
                let inserted = conn
                    .execute(
                        &format!(
                            "INSERT INTO slos ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, NULL) \
                             ON CONFLICT DO NOTHING"
                        ),
                        params![
                            slo.id.to_string(),
                            scope.tenant_id().to_string(),
                            slo.name,
                            slo.queue.as_str(),
                            kind,
                            threshold,
                            slo.objective,
                            slo.window.as_millis() as i64,
                            slo.notify_url,
                            millis(slo.created_at),
                        ],
                    )
                    .map_err(sqlite_error)?;
                if inserted == 0 {
                    return Err(StoreError::AlreadyExists);
                }
                append_for(
                    conn,
                    &scope,
                    now,
                    [drafts::slo_changed("slo.created", &slo, serde_json::json!({}))],
                )?;
                Ok(slo)
            })
            .await
    }

    async fn list_slos(&self, scope: &TenantScope) -> Result<Vec<SloRecord>, StoreError> {
        let tenant = scope.tenant_id().to_string();
        self.readers()
            .read(move |conn| {
                let sql = format!("SELECT {COLUMNS} FROM slos WHERE tenant_id = ?1 ORDER BY name");
                query_all(conn, &sql, [tenant], record_from_row)
            })
            .await
    }

    async fn delete_slo(&self, scope: &TenantScope, id: uuid::Uuid, now: Timestamp) -> Result<(), StoreError> {
        let scope = scope.clone();
        self.writer()
            .write(move |conn| {
                let record = load(conn, &scope, id)?;
                conn.execute(
                    "DELETE FROM slos WHERE tenant_id = ?1 AND id = ?2",
                    params![scope.tenant_id().to_string(), id.to_string()],
                )
                .map_err(sqlite_error)?;
                append_for(
                    conn,
                    &scope,
                    now,
                    [drafts::slo_changed("slo.deleted", &record.slo, serde_json::json!({}))],
                )
            })
            .await
    }

    async fn slo_counts(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        kind: SloKind,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Counts, StoreError> {
        let (tenant, queue) = (scope.tenant_id().to_string(), queue.as_str().to_owned());
        let (_, threshold) = kind.to_parts();
        self.readers()
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT coalesce(sum(CASE WHEN state = 'succeeded' AND (?5 IS NULL OR finished_at - created_at <= ?5) \
                     THEN 1 ELSE 0 END), 0), count(*) FROM jobs \
                     WHERE tenant_id = ?1 AND queue = ?2 AND finished_at > ?3 AND finished_at <= ?4 \
                     AND state IN ('succeeded', 'dead')",
                )
                .and_then(|mut select| {
                    select.query_row(params![tenant, queue, millis(since), millis(until), threshold], |row| {
                        Ok(Counts { good: row.get::<_, i64>(0)? as u64, total: row.get::<_, i64>(1)? as u64 })
                    })
                })
                .map_err(sqlite_error)
            })
            .await
    }

    async fn set_slo_firing(
        &self,
        scope: &TenantScope,
        id: uuid::Uuid,
        firing: &[Severity],
        now: Timestamp,
    ) -> Result<Vec<(Severity, Timestamp)>, StoreError> {
        let (scope, firing) = (scope.clone(), firing.to_vec());
        self.writer()
            .write(move |conn| {
                let record = load(conn, &scope, id)?;
                let change = decide::slo_firing(&record, &firing, now);
                conn.execute(
                    "UPDATE slos SET page_since = ?3, ticket_since = ?4 WHERE tenant_id = ?1 AND id = ?2",
                    params![
                        scope.tenant_id().to_string(),
                        id.to_string(),
                        change.page_since.map(millis),
                        change.ticket_since.map(millis)
                    ],
                )
                .map_err(sqlite_error)?;
                if let Some((_, draft)) = change.audit {
                    append_for(conn, &scope, now, [draft])?;
                }
                Ok(record.firing)
            })
            .await
    }
}
