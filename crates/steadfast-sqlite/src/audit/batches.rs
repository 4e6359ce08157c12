//! Audit records from schema 3 on: one row per command and tenant in
//! `audit_batches`, the records a JSON array in it (see the migration), and
//! one `audit_job_records` entry per record that names a job.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use steadfast_core::audit::{Actor, Record};
use steadfast_core::{JobId, TenantId, Timestamp};
use steadfast_store::StoreError;

use super::{Filters, hash_of, text_error, time_and_actor_conditions};
use crate::rows::{millis, timestamp};
use crate::sqlite_error;

/// A record as its batch holds it; the batch's columns are the rest.
#[derive(Serialize)]
struct Stored<'a> {
    seq: u64,
    action: &'a str,
    target: &'a str,
    job_id: Option<String>,
    summary: &'a str,
    prev_hash: String,
    hash: String,
}

#[derive(Deserialize)]
struct Loaded {
    seq: u64,
    action: String,
    target: String,
    job_id: Option<String>,
    summary: String,
    prev_hash: String,
    hash: String,
}

/// Writes `records` as one batch. They follow each other in one tenant's
/// chain and share their time, actor and request (one command's records).
pub(super) fn insert(conn: &Connection, records: &[Record]) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(());
    };
    let stored: Vec<Stored<'_>> = records
        .iter()
        .map(|record| Stored {
            seq: record.seq,
            action: &record.action,
            target: &record.target,
            job_id: record.job_id.map(|id| id.to_string()),
            summary: &record.summary,
            prev_hash: hex::encode(record.prev_hash),
            hash: hex::encode(record.hash),
        })
        .collect();
    let json = serde_json::to_string(&stored).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let tenant = first.tenant_id.to_string();
    conn.prepare_cached(
        "INSERT INTO audit_batches (tenant_id, first_seq, last_seq, at, actor_kind, actor_key_id, actor_name, \
         request_id, records) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            tenant,
            first.seq as i64,
            last.seq as i64,
            millis(first.at),
            first.actor.kind(),
            first.actor.key_id().map(|k| k.as_str()),
            first.actor.name(),
            first.request_id,
            json,
        ])
    })
    .map_err(sqlite_error)?;
    let mut lineage = conn
        .prepare_cached("INSERT INTO audit_job_records (tenant_id, job_id, seq) VALUES (?1, ?2, ?3)")
        .map_err(sqlite_error)?;
    for (record, stored) in records.iter().zip(&stored) {
        if let Some(job_id) = &stored.job_id {
            lineage
                .execute(params![tenant, job_id, record.seq as i64])
                .map_err(sqlite_error)?;
        }
    }
    Ok(())
}

const BATCH_COLUMNS: &str =
    "tenant_id, at, actor_kind, actor_key_id, actor_name, request_id, records, first_seq, last_seq";

/// A batch's records, in sequence order (the order a chain is read in, as
/// `ORDER BY seq` reads rows).
fn batch_from_row(row: &Row<'_>) -> rusqlite::Result<Vec<Record>> {
    let tenant_id: TenantId = row.get::<_, String>(0)?.parse().map_err(text_error)?;
    let at = timestamp(row.get(1)?)?;
    let actor = Actor::decode(
        &row.get::<_, String>(2)?,
        row.get::<_, Option<String>>(3)?.as_deref(),
        row.get(4)?,
    )
    .map_err(text_error)?;
    let request_id: Option<String> = row.get(5)?;
    let loaded: Vec<Loaded> = serde_json::from_str(&row.get::<_, String>(6)?).map_err(text_error)?;
    let hash = |text: &str| -> rusqlite::Result<[u8; 32]> { hash_of(hex::decode(text).map_err(text_error)?) };
    let mut records = loaded
        .into_iter()
        .map(|stored| {
            Ok(Record {
                tenant_id,
                seq: stored.seq,
                at,
                actor: actor.clone(),
                request_id: request_id.clone(),
                action: stored.action,
                target: stored.target,
                job_id: stored
                    .job_id
                    .map(|id| id.parse::<JobId>())
                    .transpose()
                    .map_err(text_error)?,
                summary: stored.summary,
                prev_hash: hash(&stored.prev_hash)?,
                hash: hash(&stored.hash)?,
            })
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // A record outside its row's range would hide from the scans that
    // verification makes (they find rows by range): such a row is corrupt.
    let (first, last): (i64, i64) = (row.get(7)?, row.get(8)?);
    if first < 1 || records.iter().any(|r| (r.seq as i64) < first || (r.seq as i64) > last) {
        return Err(text_error(BatchOutOfRange { first, last }));
    }
    records.sort_by_key(|record| record.seq);
    Ok(records)
}

#[derive(Debug, thiserror::Error)]
#[error("an audit batch holds records outside its sequence range {first}..={last}")]
struct BatchOutOfRange {
    first: i64,
    last: i64,
}

/// Up to `limit` records after sequence number `after`, in order.
pub(super) fn scan(conn: &Connection, tenant: TenantId, after: u64, limit: u32) -> Result<Vec<Record>, StoreError> {
    let mut select = conn
        .prepare_cached(&format!(
            "SELECT {BATCH_COLUMNS} FROM audit_batches WHERE tenant_id = ?1 AND last_seq > ?2 ORDER BY first_seq"
        ))
        .map_err(sqlite_error)?;
    let mut rows = select
        .query(params![tenant.to_string(), after as i64])
        .map_err(sqlite_error)?;
    let mut records = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite_error)? {
        let batch = batch_from_row(row).map_err(sqlite_error)?;
        records.extend(batch.into_iter().filter(|record| record.seq > after));
        if records.len() >= limit as usize {
            records.truncate(limit as usize);
            break;
        }
    }
    Ok(records)
}

/// The first record (by sequence) that names a job but is missing from
/// the lineage table, which job queries read: such a record would hide
/// from its job's history while the chain itself verifies.
pub(super) fn unlisted(conn: &Connection, tenant: TenantId) -> Result<Option<u64>, StoreError> {
    conn.query_row(
        "SELECT min(json_extract(r.value, '$.seq')) FROM audit_batches b, json_each(b.records) r \
         WHERE b.tenant_id = ?1 AND json_extract(r.value, '$.job_id') IS NOT NULL AND NOT EXISTS \
           (SELECT 1 FROM audit_job_records l WHERE l.tenant_id = b.tenant_id \
            AND l.job_id = json_extract(r.value, '$.job_id') AND l.seq = json_extract(r.value, '$.seq'))",
        params![tenant.to_string()],
        |row| row.get::<_, Option<i64>>(0),
    )
    .map(|seq| seq.map(|seq| seq as u64))
    .map_err(sqlite_error)
}

/// The first batch whose rows claim records outside its sequence range
/// (scans find batches by range, so such a record could hide from them).
pub(super) fn out_of_range(conn: &Connection, tenant: TenantId) -> Result<Option<i64>, StoreError> {
    conn.query_row(
        "SELECT min(b.first_seq) FROM audit_batches b, json_each(b.records) r WHERE b.tenant_id = ?1 \
         AND (b.first_seq < 1 OR json_extract(r.value, '$.seq') NOT BETWEEN b.first_seq AND b.last_seq)",
        params![tenant.to_string()],
        |row| row.get::<_, Option<i64>>(0),
    )
    .map_err(sqlite_error)
}

/// Up to `limit` records matching `filters`, in (time, sequence) order.
pub(super) fn query(
    conn: &Connection,
    tenant: TenantId,
    filters: &Filters<'_>,
    limit: u32,
) -> Result<Vec<Record>, StoreError> {
    match filters.query.job_id {
        Some(job_id) => by_job(conn, tenant, job_id, filters, limit),
        None => by_time(conn, tenant, filters, limit),
    }
}

/// A job's records through the lineage table, each read from its batch.
fn by_job(
    conn: &Connection,
    tenant: TenantId,
    job_id: JobId,
    filters: &Filters<'_>,
    limit: u32,
) -> Result<Vec<Record>, StoreError> {
    let seqs: Vec<i64> = {
        let mut select = conn
            .prepare_cached("SELECT seq FROM audit_job_records WHERE tenant_id = ?1 AND job_id = ?2 ORDER BY seq")
            .map_err(sqlite_error)?;
        let rows = select
            .query_map(params![tenant.to_string(), job_id.to_string()], |row| row.get(0))
            .map_err(sqlite_error)?;
        rows.collect::<Result<_, _>>().map_err(sqlite_error)?
    };
    let mut containing = conn
        .prepare_cached(&format!(
            "SELECT {BATCH_COLUMNS} FROM audit_batches WHERE tenant_id = ?1 AND first_seq <= ?2 \
             ORDER BY first_seq DESC LIMIT 1"
        ))
        .map_err(sqlite_error)?;
    let mut batch: Vec<Record> = Vec::new();
    let mut found = Vec::new();
    for seq in seqs {
        let seq = seq as u64;
        if !batch.iter().any(|record| record.seq == seq) {
            batch = containing
                .query_row(params![tenant.to_string(), seq as i64], batch_from_row)
                .optional()
                .map_err(sqlite_error)?
                .unwrap_or_default();
        }
        found.extend(
            batch
                .iter()
                .filter(|record| record.seq == seq && filters.matches(record))
                .cloned(),
        );
    }
    found.sort_by_key(|record| (record.at, record.seq));
    found.truncate(limit as usize);
    Ok(found)
}

/// Records in a time range, batch by batch from the time index.
fn by_time(conn: &Connection, tenant: TenantId, filters: &Filters<'_>, limit: u32) -> Result<Vec<Record>, StoreError> {
    let mut sql = format!("SELECT {BATCH_COLUMNS} FROM audit_batches WHERE tenant_id = ?1");
    let mut values: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(tenant.to_string())];
    time_and_actor_conditions(filters, &mut sql, &mut values);
    sql.push_str(" ORDER BY at, first_seq");
    let mut select = conn.prepare_cached(&sql).map_err(sqlite_error)?;
    let params: Vec<&dyn rusqlite::ToSql> = values.iter().map(|v| v.as_ref()).collect();
    let mut rows = select.query(params.as_slice()).map_err(sqlite_error)?;
    let mut found = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite_error)? {
        let batch = batch_from_row(row).map_err(sqlite_error)?;
        found.extend(batch.into_iter().filter(|record| filters.matches(record)));
        if found.len() >= limit as usize {
            found.truncate(limit as usize);
            break;
        }
    }
    Ok(found)
}

/// The batches entirely before `before`, oldest first, as (last seq, hash
/// of the last record, records), read until `limit` records are covered.
pub(super) fn prunable(
    conn: &Connection,
    tenant: TenantId,
    before: Timestamp,
    limit: u32,
) -> Result<Vec<(u64, [u8; 32], usize)>, StoreError> {
    let mut select = conn
        .prepare_cached(&format!(
            "SELECT {BATCH_COLUMNS} FROM audit_batches WHERE tenant_id = ?1 AND at < ?2 ORDER BY first_seq"
        ))
        .map_err(sqlite_error)?;
    let mut rows = select
        .query(params![tenant.to_string(), millis(before)])
        .map_err(sqlite_error)?;
    let (mut found, mut covered) = (Vec::new(), 0);
    while let Some(row) = rows.next().map_err(sqlite_error)? {
        let batch = batch_from_row(row).map_err(sqlite_error)?;
        let Some(last) = batch.last() else { continue };
        found.push((last.seq, last.hash, batch.len()));
        covered += batch.len();
        if covered >= limit as usize {
            break;
        }
    }
    Ok(found)
}
