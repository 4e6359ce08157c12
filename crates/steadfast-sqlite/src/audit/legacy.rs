//! Audit records written before schema 3, one row each in `audit_records`.
//! Nothing is added to them any more; reads, verification and retention
//! still find them, so a chain verifies across the upgrade.

use rusqlite::{Connection, Row, params};
use steadfast_core::audit::{Actor, Record};
use steadfast_core::{JobId, TenantId};
use steadfast_store::StoreError;

use super::{Filters, hash_of, text_error, time_and_actor_conditions};
use crate::rows::{millis, timestamp};
use crate::sqlite_error;

const RECORD_COLUMNS: &str = "tenant_id, seq, at, actor_kind, actor_key_id, actor_name, request_id, action, target, \
                              job_id, summary, prev_hash, hash";

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
        prev_hash: hash_of(row.get(11)?)?,
        hash: hash_of(row.get(12)?)?,
    })
}

/// Up to `limit` records after sequence number `after`, in order.
pub(super) fn scan(conn: &Connection, tenant: TenantId, after: u64, limit: u32) -> Result<Vec<Record>, StoreError> {
    let sql =
        format!("SELECT {RECORD_COLUMNS} FROM audit_records WHERE tenant_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3");
    let mut select = conn.prepare_cached(&sql).map_err(sqlite_error)?;
    let rows = select
        .query_map(
            params![tenant.to_string(), after as i64, i64::from(limit)],
            record_from_row,
        )
        .map_err(sqlite_error)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sqlite_error)
}

/// Up to `limit` records matching `filters`, in (time, sequence) order.
pub(super) fn query(
    conn: &Connection,
    tenant: TenantId,
    filters: &Filters<'_>,
    limit: u32,
) -> Result<Vec<Record>, StoreError> {
    let query = filters.query;
    let mut sql = format!("SELECT {RECORD_COLUMNS} FROM audit_records WHERE tenant_id = ?1");
    let mut values: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(tenant.to_string())];
    time_and_actor_conditions(filters, &mut sql, &mut values);
    let mut add = |clause: &str, value: Box<dyn rusqlite::ToSql>| {
        values.push(value);
        sql.push_str(&format!(" AND {clause} ?{}", values.len()));
    };
    if let Some(action) = &query.action {
        add("action =", Box::new(action.clone()));
    }
    if let Some(job_id) = query.job_id {
        add("job_id =", Box::new(job_id.to_string()));
    }
    if filters.base > 0 {
        add("seq >", Box::new(filters.base as i64));
    }
    if let Some(after) = query.after {
        values.push(Box::new(millis(after.at)));
        values.push(Box::new(after.seq as i64));
        let (at, seq) = (values.len() - 1, values.len());
        sql.push_str(&format!(" AND (at > ?{at} OR seq > ?{seq})"));
    }
    values.push(Box::new(i64::from(limit)));
    // (at, seq) order reads the (tenant, at, seq) index from the cursor on.
    sql.push_str(&format!(" ORDER BY at, seq LIMIT ?{}", values.len()));
    let mut select = conn.prepare_cached(&sql).map_err(sqlite_error)?;
    let params: Vec<&dyn rusqlite::ToSql> = values.iter().map(|v| v.as_ref()).collect();
    let rows = select
        .query_map(params.as_slice(), record_from_row)
        .map_err(sqlite_error)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sqlite_error)
}

/// The oldest records before `before`, at most `limit`, as (seq, hash).
pub(super) fn prunable(
    conn: &Connection,
    tenant: TenantId,
    before: steadfast_core::Timestamp,
    limit: u32,
) -> Result<Vec<(u64, [u8; 32])>, StoreError> {
    let mut select = conn
        .prepare_cached("SELECT seq, hash FROM audit_records WHERE tenant_id = ?1 AND at < ?2 ORDER BY seq LIMIT ?3")
        .map_err(sqlite_error)?;
    let rows = select
        .query_map(params![tenant.to_string(), millis(before), i64::from(limit)], |row| {
            Ok((row.get::<_, i64>(0)? as u64, hash_of(row.get(1)?)?))
        })
        .map_err(sqlite_error)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sqlite_error)
}
