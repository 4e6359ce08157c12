//! The audit chain in SQLite. The single writer serialises appends, so a
//! chain cannot fork; triggers refuse updates and deletes of records.
//!
//! Since schema 3 a command's records are stored together, one row per
//! command and tenant ([`batches`]); records written before stay one row
//! each ([`legacy`]). A chain runs on from one into the other, and every
//! read joins both.

mod batches;
mod legacy;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use steadfast_core::audit::{self, Actor, Draft, Head, Record};
use steadfast_core::{TenantId, Timestamp};
use steadfast_store::audit::{ActorFilter, AuthFailures, drafts};
use steadfast_store::decide::{self, KeyChange, SigningKeyRecord};
use steadfast_store::{AuditPage, AuditQuery, AuditStore, StoreError, TenantScope};

use crate::rows::millis;
use crate::{SqliteStore, sqlite_error};

/// The tenant id of the system chain.
pub(crate) use steadfast_store::audit::SYSTEM_CHAIN;

/// The registered audit signing keys, in position order.
fn signing_keys_in(conn: &Connection) -> Result<Vec<SigningKeyRecord>, StoreError> {
    crate::rows::query_all(
        conn,
        "SELECT position, public_key, registered_at FROM audit_signing_keys ORDER BY position",
        [],
        |row| {
            Ok(SigningKeyRecord {
                position: row.get(0)?,
                public_key: row.get(1)?,
                registered_at: crate::rows::timestamp(row.get(2)?)?,
            })
        },
    )
}

fn text_error(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

fn hash_of(bytes: Vec<u8>) -> rusqlite::Result<[u8; 32]> {
    bytes.try_into().map_err(|_| text_error(std::fmt::Error))
}

/// What a query asks of each record, for the filters SQL cannot apply to a
/// batch's records.
struct Filters<'a> {
    from: Option<Timestamp>,
    until: Option<Timestamp>,
    /// Where the chain starts after retention: nothing at or before it is
    /// part of the chain, so no listing shows it (verification never sees it).
    base: u64,
    query: &'a AuditQuery,
}

impl<'a> Filters<'a> {
    fn of(query: &'a AuditQuery, base: Option<Head>) -> Filters<'a> {
        Filters {
            from: query.from(),
            until: query.until,
            base: base.map_or(0, |base| base.seq),
            query,
        }
    }

    fn matches(&self, record: &Record) -> bool {
        let query = self.query;
        record.seq > self.base
            && self.from.is_none_or(|from| record.at >= from)
            && self.until.is_none_or(|until| record.at < until)
            && query
                .after
                .is_none_or(|after| (record.at, record.seq) > (after.at, after.seq))
            && query.action.as_ref().is_none_or(|action| &record.action == action)
            && query.job_id.is_none_or(|job_id| record.job_id == Some(job_id))
            && match query.actor_filter() {
                Some(ActorFilter::Kind(kind)) => record.actor.kind() == kind,
                Some(ActorFilter::KeyId(key_id)) => record.actor.key_id().is_some_and(|k| k.as_str() == key_id),
                None => true,
            }
    }
}

/// Appends the conditions both storages apply in SQL, the time range and
/// the actor (columns of the same names in both tables), numbering their
/// values after those already in `values`.
fn time_and_actor_conditions(filters: &Filters<'_>, sql: &mut String, values: &mut Vec<Box<dyn rusqlite::ToSql>>) {
    let mut add = |clause: &str, value: Box<dyn rusqlite::ToSql>| {
        values.push(value);
        sql.push_str(&format!(" AND {clause} ?{}", values.len()));
    };
    if let Some(from) = filters.from {
        add("at >=", Box::new(millis(from)));
    }
    if let Some(until) = filters.until {
        add("at <", Box::new(millis(until)));
    }
    match filters.query.actor_filter() {
        Some(ActorFilter::Kind(kind)) => add("actor_kind =", Box::new(kind.to_owned())),
        Some(ActorFilter::KeyId(key_id)) => add("actor_key_id =", Box::new(key_id.to_owned())),
        None => {}
    }
}

fn head_of(conn: &Connection, table: &str, tenant: TenantId) -> Result<Option<Head>, StoreError> {
    conn.prepare_cached(&format!("SELECT seq, hash FROM {table} WHERE tenant_id = ?1"))
        .and_then(|mut select| {
            select
                .query_row([tenant.to_string()], |row| {
                    Ok(Head {
                        seq: row.get::<_, i64>(0)? as u64,
                        hash: hash_of(row.get(1)?)?,
                    })
                })
                .optional()
        })
        .map_err(sqlite_error)
}

/// Appends `drafts` to `tenant`'s chain, inside the caller's transaction,
/// as one batch.
pub(crate) fn append(
    conn: &Connection,
    tenant: TenantId,
    actor: &Actor,
    request_id: Option<&str>,
    now: Timestamp,
    drafts: impl IntoIterator<Item = Draft>,
) -> Result<(), StoreError> {
    let mut head = head_of(conn, "audit_heads", tenant)?;
    let mut records = Vec::new();
    for draft in drafts {
        let record = audit::append(head, tenant, now, actor.clone(), request_id.map(str::to_owned), draft);
        head = Some(Head {
            seq: record.seq,
            hash: record.hash,
        });
        records.push(record);
    }
    let Some(head) = head.filter(|_| !records.is_empty()) else {
        return Ok(());
    };
    batches::insert(conn, &records)?;
    conn.prepare_cached(
        "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (?1, ?2, ?3) \
         ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )
    .and_then(|mut upsert| upsert.execute(params![tenant.to_string(), head.seq as i64, head.hash.as_slice()]))
    .map_err(sqlite_error)?;
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

/// A page of records matching `query`, from both storages, in (time,
/// sequence) order.
fn query_in(conn: &Connection, tenant: TenantId, query: &AuditQuery) -> Result<AuditPage, StoreError> {
    // One more than a page says whether another follows.
    let wanted = query.limit.saturating_add(1);
    let filters = Filters::of(query, head_of(conn, "audit_bases", tenant)?);
    let mut records = legacy::query(conn, tenant, &filters, wanted)?;
    records.extend(batches::query(conn, tenant, &filters, wanted)?);
    records.sort_by_key(|record| (record.at, record.seq));
    records.truncate(wanted as usize);
    Ok(AuditPage::from_rows(records, query.limit))
}

/// Up to `limit` records after sequence number `after`, in order, from both
/// storages: the older records come first in the chain.
fn scan_in(conn: &Connection, tenant: TenantId, after: u64, limit: u32) -> Result<Vec<Record>, StoreError> {
    let mut records = legacy::scan(conn, tenant, after, limit)?;
    if records.len() < limit as usize {
        let after = records.last().map_or(after, |record| record.seq);
        records.extend(batches::scan(conn, tenant, after, limit - records.len() as u32)?);
    }
    Ok(records)
}

fn prune_in(conn: &Connection, before: Timestamp, limit: u32, now: Timestamp) -> Result<usize, StoreError> {
    let tenants: Vec<String> = {
        let mut select = conn
            .prepare(
                "SELECT tenant_id FROM audit_records WHERE at < ?1 UNION \
                 SELECT tenant_id FROM audit_batches WHERE at < ?1 LIMIT 1000",
            )
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
        let Some((base, _)) = prunable_prefix(conn, tenant_id, before, limit)? else {
            continue;
        };
        // The permit lets the triggers allow exactly these deletions, and
        // only inside this transaction.
        conn.execute(
            "INSERT OR REPLACE INTO audit_prune_permits (tenant_id, through_seq) VALUES (?1, ?2)",
            params![tenant, base.seq as i64],
        )
        .map_err(sqlite_error)?;
        let deleted = |sql: &str| {
            conn.execute(sql, params![tenant, base.seq as i64])
                .map_err(sqlite_error)
        };
        // What went is counted from the chain's own storage, not from the
        // selection: records of a batch are counted from its sequence range.
        let old_records = deleted("DELETE FROM audit_records WHERE tenant_id = ?1 AND seq <= ?2")?;
        let batched: i64 = conn
            .query_row(
                "SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM audit_batches \
                 WHERE tenant_id = ?1 AND last_seq <= ?2",
                params![tenant, base.seq as i64],
                |row| row.get(0),
            )
            .map_err(sqlite_error)?;
        deleted("DELETE FROM audit_batches WHERE tenant_id = ?1 AND last_seq <= ?2")?;
        deleted("DELETE FROM audit_job_records WHERE tenant_id = ?1 AND seq <= ?2")?;
        let count = old_records + batched.max(0) as usize;
        conn.execute("DELETE FROM audit_prune_permits WHERE tenant_id = ?1", [&tenant])
            .map_err(sqlite_error)?;
        conn.execute(
            "INSERT INTO audit_bases (tenant_id, seq, hash) VALUES (?1, ?2, ?3) \
             ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            params![tenant, base.seq as i64, base.hash.as_slice()],
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

/// The longest prefix of a chain older than `before` that retention may
/// remove, about `limit` records (whole batches; at least one), as the
/// last record to go and how many go.
fn prunable_prefix(
    conn: &Connection,
    tenant: TenantId,
    before: Timestamp,
    limit: u32,
) -> Result<Option<(Head, usize)>, StoreError> {
    let old = legacy::prunable(conn, tenant, before, limit)?;
    let mut last = old.last().map(|&(seq, hash)| (Head { seq, hash }, old.len()));
    let legacy_left = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM audit_records WHERE tenant_id = ?1 AND seq > ?2)",
            params![tenant.to_string(), last.map_or(0, |(head, _)| head.seq as i64)],
            |row| row.get::<_, bool>(0),
        )
        .map_err(sqlite_error)?;
    // Batches follow the old records in the chain: only once none of those
    // is left may the prefix reach into them.
    if !legacy_left && (old.len() as u32) < limit {
        let mut count = last.map_or(0, |(_, count)| count);
        for (seq, hash, records) in batches::prunable(conn, tenant, before, limit - old.len() as u32)? {
            if count > 0 && count + records > limit as usize {
                break;
            }
            count += records;
            last = Some((Head { seq, hash }, count));
        }
    }
    Ok(last)
}

impl SqliteStore {
    /// Called after an audit read and before its result is returned: a
    /// record may be committed but not yet on disk (a lease's, or any other
    /// before the syncer's fsync, or another process's), and what a reader
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
            .read(move |conn| scan_in(conn, tenant, after, limit))
            .await?;
        self.after_read_durable().await?;
        Ok(records)
    }

    async fn check_audit_storage(&self, scope: &TenantScope) -> Result<(), StoreError> {
        let tenant = scope.tenant_id();
        self.readers()
            .read(move |conn| {
                if let Some(first_seq) = batches::out_of_range(conn, tenant)? {
                    return Err(StoreError::Corrupt(format!(
                        "the audit batch at {first_seq} holds records outside its sequence range"
                    )));
                }
                if let Some(seq) = batches::unlisted(conn, tenant)? {
                    return Err(StoreError::Corrupt(format!(
                        "audit record {seq} is missing from its job's lineage"
                    )));
                }
                Ok(())
            })
            .await
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

    async fn record_auth_failures(&self, failures: &AuthFailures, now: Timestamp) -> Result<(), StoreError> {
        let failures = failures.clone();
        self.writer()
            .write(move |conn| {
                let tenant = match &failures.key_id {
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
                    None,
                    now,
                    [drafts::auth_failed(&failures)],
                )
            })
            .await
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        self.readers().read(signing_keys_in).await
    }

    async fn register_signing_key(
        &self,
        public_key: &str,
        change: KeyChange,
        now: Timestamp,
    ) -> Result<Option<SigningKeyRecord>, StoreError> {
        let public_key = public_key.to_owned();
        self.writer()
            .write(move |conn| {
                let registered = signing_keys_in(conn)?;
                let Some(new) = decide::register_signing_key(&registered, &public_key, change, now)? else {
                    return Ok(None);
                };
                conn.execute(
                    "INSERT INTO audit_signing_keys (position, public_key, registered_at) VALUES (?1, ?2, ?3)",
                    params![
                        new.record.position,
                        new.record.public_key,
                        millis(new.record.registered_at)
                    ],
                )
                .map_err(sqlite_error)?;
                append(conn, SYSTEM_CHAIN, &new.actor, None, now, [new.draft])?;
                Ok(Some(new.record))
            })
            .await
    }

    async fn prune_audit(&self, before: Timestamp, limit: u32, now: Timestamp) -> Result<usize, StoreError> {
        self.writer()
            .write(move |conn| prune_in(conn, before, limit, now))
            .await
    }
}
