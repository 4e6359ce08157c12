//! The audit chain in SQLite. The single writer serialises appends, so a
//! chain cannot fork; triggers refuse updates and deletes of records.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use steadfast_core::audit::{self, Actor, Draft, Head, Record};
use steadfast_core::{JobId, KeyId, TenantId, Timestamp};
use steadfast_store::audit::ActorFilter;
use steadfast_store::audit::drafts;
use steadfast_store::{AuditPage, AuditQuery, AuditStore, StoreError, TenantScope};

use crate::rows::{millis, timestamp};
use crate::{SqliteStore, sqlite_error};

/// The tenant id of the system chain.
pub(crate) const SYSTEM_CHAIN: TenantId = TenantId(uuid::Uuid::nil());

fn text_error(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

fn hash_column(row: &Row<'_>, index: usize) -> rusqlite::Result<[u8; 32]> {
    let bytes: Vec<u8> = row.get(index)?;
    bytes.try_into().map_err(|_| text_error(std::fmt::Error))
}

const RECORD_COLUMNS: &str = "tenant_id, seq, at, actor_kind, actor_key_id, actor_name, request_id, action, target, job_id, summary, prev_hash, hash";

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<Record> {
    let actor = Actor::decode(
        &row.get::<_, String>(3)?,
        row.get::<_, Option<String>>(4)?.as_deref(),
        row.get(5)?,
    )
    .map_err(text_error)?;
    Ok(Record {
        tenant_id: row.get::<_, String>(0)?.parse().map_err(text_error)?,
        seq: row.get::<_, i64>(1)? as u64,
        at: timestamp(row.get(2)?)?,
        actor,
        request_id: row.get(6)?,
        action: row.get(7)?,
        target: row.get(8)?,
        job_id: row
            .get::<_, Option<String>>(9)?
            .map(|id| id.parse::<JobId>())
            .transpose()
            .map_err(text_error)?,
        summary: row.get(10)?,
        prev_hash: hash_column(row, 11)?,
        hash: hash_column(row, 12)?,
    })
}

fn head_of(conn: &Connection, table: &str, tenant: TenantId) -> Result<Option<Head>, StoreError> {
    conn.prepare_cached(&format!("SELECT seq, hash FROM {table} WHERE tenant_id = ?1"))
        .and_then(|mut select| {
            select
                .query_row([tenant.to_string()], |row| {
                    Ok(Head {
                        seq: row.get::<_, i64>(0)? as u64,
                        hash: hash_column(row, 1)?,
                    })
                })
                .optional()
        })
        .map_err(sqlite_error)
}

/// Appends `drafts` to `tenant`'s chain, inside the caller's transaction.
pub(crate) fn append(
    conn: &Connection,
    tenant: TenantId,
    actor: &Actor,
    request_id: Option<&str>,
    now: Timestamp,
    drafts: impl IntoIterator<Item = Draft>,
) -> Result<(), StoreError> {
    let mut head = head_of(conn, "audit_heads", tenant)?;
    let mut appended = false;
    for draft in drafts {
        let record = audit::append(head, tenant, now, actor.clone(), request_id.map(str::to_owned), draft);
        conn.prepare_cached(&format!(
            "INSERT INTO audit_records ({RECORD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        ))
        .and_then(|mut insert| {
            insert.execute(params![
                record.tenant_id.to_string(),
                record.seq as i64,
                millis(record.at),
                record.actor.kind(),
                record.actor.key_id().map(|k| k.as_str()),
                record.actor.name(),
                record.request_id,
                record.action,
                record.target,
                record.job_id.map(|id| id.to_string()),
                record.summary,
                record.prev_hash.as_slice(),
                record.hash.as_slice(),
            ])
        })
        .map_err(sqlite_error)?;
        head = Some(Head {
            seq: record.seq,
            hash: record.hash,
        });
        appended = true;
    }
    if let (true, Some(head)) = (appended, head) {
        conn.prepare_cached(
            "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (?1, ?2, ?3) \
             ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        )
        .and_then(|mut upsert| upsert.execute(params![tenant.to_string(), head.seq as i64, head.hash.as_slice()]))
        .map_err(sqlite_error)?;
    }
    Ok(())
}

/// Appends on behalf of a request's scope.
pub(crate) fn append_for(
    conn: &Connection,
    scope: &TenantScope,
    now: Timestamp,
    drafts: impl IntoIterator<Item = Draft>,
) -> Result<(), StoreError> {
    append(conn, scope.tenant_id(), scope.actor(), scope.request_id(), now, drafts)
}

fn query_in(conn: &Connection, tenant: TenantId, query: &AuditQuery) -> Result<AuditPage, StoreError> {
    let mut sql = format!("SELECT {RECORD_COLUMNS} FROM audit_records WHERE tenant_id = ?1");
    let mut values: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(tenant.to_string())];
    let mut add = |clause: &str, value: Box<dyn rusqlite::ToSql>| {
        values.push(value);
        sql.push_str(&format!(" AND {clause} ?{}", values.len()));
    };
    if let Some(from) = query.from() {
        add("at >=", Box::new(millis(from)));
    }
    if let Some(until) = query.until {
        add("at <", Box::new(millis(until)));
    }
    match query.actor_filter() {
        Some(ActorFilter::Kind(kind)) => add("actor_kind =", Box::new(kind.to_owned())),
        Some(ActorFilter::KeyId(key_id)) => add("actor_key_id =", Box::new(key_id.to_owned())),
        None => {}
    }
    if let Some(action) = &query.action {
        add("action =", Box::new(action.clone()));
    }
    if let Some(job_id) = query.job_id {
        add("job_id =", Box::new(job_id.to_string()));
    }
    if let Some(after) = query.after {
        values.push(Box::new(millis(after.at)));
        values.push(Box::new(after.seq as i64));
        let (at, seq) = (values.len() - 1, values.len());
        sql.push_str(&format!(" AND (at > ?{at} OR seq > ?{seq})"));
    }
    values.push(Box::new(i64::from(query.limit) + 1));
    // (at, seq) order reads the (tenant, at, seq) index from the cursor on.
    sql.push_str(&format!(" ORDER BY at, seq LIMIT ?{}", values.len()));
    let mut select = conn.prepare_cached(&sql).map_err(sqlite_error)?;
    let params: Vec<&dyn rusqlite::ToSql> = values.iter().map(|v| v.as_ref()).collect();
    let rows = select
        .query_map(params.as_slice(), record_from_row)
        .map_err(sqlite_error)?;
    let records = rows.collect::<Result<Vec<_>, _>>().map_err(sqlite_error)?;
    Ok(AuditPage::from_rows(records, query.limit))
}

fn prune_in(conn: &Connection, before: Timestamp, limit: u32, now: Timestamp) -> Result<usize, StoreError> {
    let tenants: Vec<String> = {
        let mut select = conn
            .prepare("SELECT DISTINCT tenant_id FROM audit_records WHERE at < ?1 LIMIT 1000")
            .map_err(sqlite_error)?;
        let rows = select
            .query_map([millis(before)], |row| row.get(0))
            .map_err(sqlite_error)?;
        rows.collect::<Result<_, _>>().map_err(sqlite_error)?
    };
    let mut removed = 0;
    for tenant in tenants {
        let tenant_id: TenantId = tenant
            .parse()
            .map_err(|_| StoreError::Corrupt("bad tenant id".into()))?;
        // The newest record to go: everything up to it is older than `before`.
        let last: Option<(i64, Vec<u8>)> = conn
            .query_row(
                "SELECT seq, hash FROM (SELECT seq, hash FROM audit_records WHERE tenant_id = ?1 AND at < ?2 \
                 ORDER BY seq LIMIT ?3) ORDER BY seq DESC LIMIT 1",
                params![tenant, millis(before), i64::from(limit)],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(sqlite_error)?;
        let Some((through, hash)) = last else { continue };
        let hash: [u8; 32] = hash
            .try_into()
            .map_err(|_| StoreError::Corrupt("bad audit hash".into()))?;
        conn.execute(
            "INSERT OR REPLACE INTO audit_prune_permits (tenant_id, through_seq) VALUES (?1, ?2)",
            params![tenant, through],
        )
        .map_err(sqlite_error)?;
        let count = conn
            .execute(
                "DELETE FROM audit_records WHERE tenant_id = ?1 AND seq <= ?2",
                params![tenant, through],
            )
            .map_err(sqlite_error)?;
        conn.execute("DELETE FROM audit_prune_permits WHERE tenant_id = ?1", [&tenant])
            .map_err(sqlite_error)?;
        let base = Head {
            seq: through as u64,
            hash,
        };
        conn.execute(
            "INSERT INTO audit_bases (tenant_id, seq, hash) VALUES (?1, ?2, ?3) \
             ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            params![tenant, through, hash.as_slice()],
        )
        .map_err(sqlite_error)?;
        append(
            conn,
            tenant_id,
            &Actor::System,
            None,
            now,
            [drafts::audit_pruned(base, count)],
        )?;
        removed += count;
    }
    Ok(removed)
}

impl SqliteStore {
    /// Called after an audit read and before its result is returned: a
    /// lease's record may be committed but not yet on disk, and what a reader
    /// saw committed before this barrier, so the barrier's fsync covers it.
    /// Nothing shown, exported or signed can then be taken back by a crash.
    async fn after_read_durable(&self) -> Result<(), StoreError> {
        self.writer().barrier().await
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn audit_records(&self, scope: &TenantScope, query: AuditQuery) -> Result<AuditPage, StoreError> {
        let tenant = scope.tenant_id();
        let page = self.readers().read(move |conn| query_in(conn, tenant, &query)).await?;
        self.after_read_durable().await?;
        Ok(page)
    }

    async fn audit_scan(&self, scope: &TenantScope, after: u64, limit: u32) -> Result<Vec<Record>, StoreError> {
        let tenant = scope.tenant_id();
        let records = self
            .readers()
            .read(move |conn| {
                let sql = format!(
                    "SELECT {RECORD_COLUMNS} FROM audit_records WHERE tenant_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                );
                let mut select = conn.prepare_cached(&sql).map_err(sqlite_error)?;
                let rows = select
                    .query_map(
                        params![tenant.to_string(), after as i64, i64::from(limit)],
                        record_from_row,
                    )
                    .map_err(sqlite_error)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(sqlite_error)
            })
            .await?;
        self.after_read_durable().await?;
        Ok(records)
    }

    async fn audit_head(&self, scope: &TenantScope) -> Result<Option<Head>, StoreError> {
        let tenant = scope.tenant_id();
        let head = self
            .readers()
            .read(move |conn| head_of(conn, "audit_heads", tenant))
            .await?;
        self.after_read_durable().await?;
        Ok(head)
    }

    async fn audit_base(&self, scope: &TenantScope) -> Result<Option<Head>, StoreError> {
        let tenant = scope.tenant_id();
        self.readers()
            .read(move |conn| head_of(conn, "audit_bases", tenant))
            .await
    }

    async fn record_auth_failure(
        &self,
        key_id: Option<&KeyId>,
        request_id: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let key_id = key_id.cloned();
        let request_id = request_id.map(str::to_owned);
        self.writer()
            .write(move |conn| {
                let tenant = match &key_id {
                    Some(key_id) => conn
                        .query_row(
                            "SELECT tenant_id FROM api_keys WHERE key_id = ?1",
                            [key_id.as_str()],
                            |row| row.get::<_, String>(0),
                        )
                        .optional()
                        .map_err(sqlite_error)?
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(SYSTEM_CHAIN),
                    None => SYSTEM_CHAIN,
                };
                append(
                    conn,
                    tenant,
                    &Actor::System,
                    request_id.as_deref(),
                    now,
                    [drafts::auth_failed(key_id.as_ref())],
                )
            })
            .await
    }

    async fn prune_audit(&self, before: Timestamp, limit: u32, now: Timestamp) -> Result<usize, StoreError> {
        self.writer()
            .write(move |conn| prune_in(conn, before, limit, now))
            .await
    }
}
