use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use steadfast_core::{Job, JobId, QueueName, TenantId, Timestamp};
use steadfast_store::audit::drafts;
use steadfast_store::decide::{self, Author, Ingest, LiveInboxKey};
use steadfast_store::{
    EventPage, EventRecord, InboxEvent, InboxStore, Ingested, JobEvent, NewJob, SignatureFailures, Source,
    SourceSecret, StoreError, TenantScope,
};

use crate::audit::append_for;
use crate::persist::persist;
use crate::rows::{millis, optional_timestamp, query_all, timestamp};
use crate::{SqliteStore, sqlite_error};

fn text_error(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

fn duration(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

const SOURCE_COLUMNS: &str = "id, tenant_id, name, kind, queue, config, tolerance_ms, dedup_window_ms, created_at";

fn source_from_row(row: &Row<'_>) -> rusqlite::Result<Source> {
    Ok(Source {
        id: row.get(0)?,
        tenant_id: row.get::<_, String>(1)?.parse().map_err(text_error)?,
        name: row.get(2)?,
        kind: row.get(3)?,
        queue: QueueName::new(row.get::<_, String>(4)?).map_err(text_error)?,
        config: row.get(5)?,
        tolerance: duration(row.get(6)?),
        dedup_window: duration(row.get(7)?),
        created_at: timestamp(row.get(8)?)?,
        secrets: Vec::new(),
    })
}

fn secrets_of(conn: &Connection, source_id: &str) -> Result<Vec<SourceSecret>, StoreError> {
    query_all(
        conn,
        "SELECT id, secret, created_at, expires_at FROM source_secrets WHERE source_id = ?1 ORDER BY created_at, id",
        [source_id],
        |row| {
            Ok(SourceSecret {
                id: row.get(0)?,
                value: row.get(1)?,
                created_at: timestamp(row.get(2)?)?,
                expires_at: optional_timestamp(row.get(3)?)?,
            })
        },
    )
}

/// A live source with its secrets; `tenant` scopes the lookup unless the
/// caller is an unauthenticated delivery (`None`).
fn load_source(conn: &Connection, tenant: Option<TenantId>, id: &str) -> Result<Option<Source>, StoreError> {
    let source = conn
        .prepare_cached(&format!(
            "SELECT {SOURCE_COLUMNS} FROM sources WHERE id = ?1 AND deleted_at IS NULL \
             AND (?2 IS NULL OR tenant_id = ?2)"
        ))
        .and_then(|mut select| {
            select
                .query_row(params![id, tenant.map(|t| t.to_string())], source_from_row)
                .optional()
        })
        .map_err(sqlite_error)?;
    let Some(mut source) = source else {
        return Ok(None);
    };
    source.secrets = secrets_of(conn, &source.id)?;
    Ok(Some(source))
}

fn insert_secret(conn: &Connection, source: &Source, secret: &SourceSecret) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO source_secrets (source_id, id, tenant_id, secret, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            source.id,
            secret.id,
            source.tenant_id.to_string(),
            secret.value,
            millis(secret.created_at),
            secret.expires_at.map(millis)
        ],
    )
    .map_err(sqlite_error)?;
    Ok(())
}

/// The columns [`event_from_row`] reads, in order; the body, when
/// selected, comes after them.
const EVENT_COLUMNS: &str = "seq, source_id, event_id, received_at, body_sha256, body_bytes, headers, \
     verification, secret_id, duplicates, last_duplicate_at, job_id";

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        seq: row.get(0)?,
        source_id: row.get(1)?,
        event_id: row.get(2)?,
        received_at: timestamp(row.get(3)?)?,
        body: None,
        body_sha256: row.get(4)?,
        body_bytes: row.get::<_, i64>(5)?.max(0) as u64,
        headers: row.get(6)?,
        verification: row.get(7)?,
        secret_id: row.get(8)?,
        duplicates: row.get::<_, i64>(9)?.max(0) as u64,
        last_duplicate_at: optional_timestamp(row.get(10)?)?,
        job_id: row.get::<_, String>(11)?.parse().map_err(text_error)?,
        replays: Vec::new(),
    })
}

fn event_with_body(row: &Row<'_>) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        body: Some(row.get(12)?),
        ..event_from_row(row)?
    })
}

/// Jobs replayed from `event`, oldest first.
fn with_replays(conn: &Connection, tenant: TenantId, mut event: EventRecord) -> Result<EventRecord, StoreError> {
    let ids: Vec<String> = query_all(
        conn,
        "SELECT job_id FROM inbox_jobs WHERE event_seq = ?1 AND tenant_id = ?2 AND replay = 1 ORDER BY rowid",
        params![event.seq, tenant.to_string()],
        |row| row.get(0),
    )?;
    event.replays = ids
        .into_iter()
        .map(|id| id.parse().map_err(|_| StoreError::Corrupt(format!("bad job id {id}"))))
        .collect::<Result<_, _>>()?;
    Ok(event)
}

fn load_event(conn: &Connection, tenant: TenantId, seq: i64) -> Result<Option<EventRecord>, StoreError> {
    let event = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM inbox_events WHERE seq = ?1 AND tenant_id = ?2"
        ))
        .and_then(|mut select| {
            select
                .query_row(params![seq, tenant.to_string()], event_from_row)
                .optional()
        })
        .map_err(sqlite_error)?;
    event.map(|event| with_replays(conn, tenant, event)).transpose()
}

/// The claims on `event`'s dedup keys still inside their window.
fn live_keys(conn: &Connection, event: &InboxEvent, now: Timestamp) -> Result<Vec<LiveInboxKey>, StoreError> {
    let mut select = conn
        .prepare_cached("SELECT event_seq FROM inbox_keys WHERE source_id = ?1 AND key = ?2 AND expires_at > ?3")
        .map_err(sqlite_error)?;
    let mut live = Vec::new();
    for key in &event.dedup_keys {
        let seq: Option<i64> = select
            .query_row(params![event.source_id, key, millis(now)], |row| row.get(0))
            .optional()
            .map_err(sqlite_error)?;
        if let Some(event_seq) = seq {
            live.push(LiveInboxKey {
                key: key.clone(),
                event_seq,
            });
        }
    }
    Ok(live)
}

fn link_job(conn: &Connection, tenant: TenantId, job: &Job, event_seq: i64, replay: bool) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO inbox_jobs (tenant_id, job_id, event_seq, replay) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut insert| insert.execute(params![tenant.to_string(), job.id.to_string(), event_seq, replay]))
        .map_err(sqlite_error)?;
    Ok(())
}

/// Stores a new event, claims its keys (taking over claims whose window
/// passed) and links its job. Answers the event's `seq`.
fn store_event(
    conn: &Connection,
    tenant: TenantId,
    event: &InboxEvent,
    job: &Job,
    keys_expire_at: Timestamp,
) -> Result<i64, StoreError> {
    let seq: i64 = conn
        .prepare_cached(
            "INSERT INTO inbox_events (tenant_id, source_id, event_id, received_at, body, body_sha256, body_bytes, \
             headers, verification, secret_id, job_id, keys_expire_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) RETURNING seq",
        )
        .and_then(|mut insert| {
            insert.query_row(
                params![
                    tenant.to_string(),
                    event.source_id,
                    event.event_id,
                    millis(event.received_at),
                    event.body,
                    event.body_sha256,
                    event.body.len() as i64,
                    event.headers,
                    event.verification,
                    event.secret_id,
                    job.id.to_string(),
                    millis(keys_expire_at)
                ],
                |row| row.get(0),
            )
        })
        .map_err(sqlite_error)?;
    let mut claim = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO inbox_keys (source_id, key, tenant_id, event_seq, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(sqlite_error)?;
    for key in &event.dedup_keys {
        claim
            .execute(params![
                event.source_id,
                key,
                tenant.to_string(),
                seq,
                millis(keys_expire_at)
            ])
            .map_err(sqlite_error)?;
    }
    link_job(conn, tenant, job, seq, false)?;
    Ok(seq)
}

fn corrupt_missing(what: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} vanished inside its transaction"))
}

#[async_trait]
impl InboxStore for SqliteStore {
    async fn create_source(
        &self,
        scope: &TenantScope,
        source: Source,
        max_sources: usize,
        now: Timestamp,
    ) -> Result<Source, StoreError> {
        let scope = scope.clone();
        self.writer()
            .write(move |conn| {
                let source = Source {
                    tenant_id: scope.tenant_id(),
                    ..source
                };
                let live: i64 = conn
                    .query_row(
                        "SELECT count(*) FROM sources WHERE tenant_id = ?1 AND deleted_at IS NULL",
                        [source.tenant_id.to_string()],
                        |row| row.get(0),
                    )
                    .map_err(sqlite_error)?;
                decide::within_source_limit(live.max(0) as usize, max_sources)?;
                let inserted = conn
                    .execute(
                        &format!(
                            "INSERT INTO sources ({SOURCE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                             ON CONFLICT DO NOTHING"
                        ),
                        params![
                            source.id,
                            source.tenant_id.to_string(),
                            source.name,
                            source.kind,
                            source.queue.as_str(),
                            source.config,
                            source.tolerance.as_millis() as i64,
                            source.dedup_window.as_millis() as i64,
                            millis(source.created_at)
                        ],
                    )
                    .map_err(sqlite_error)?;
                if inserted == 0 {
                    return Err(StoreError::AlreadyExists);
                }
                for secret in &source.secrets {
                    insert_secret(conn, &source, secret)?;
                }
                append_for(conn, &scope, now, [drafts::source_changed("source.created", &source)])?;
                Ok(source)
            })
            .await
    }

    async fn list_sources(&self, scope: &TenantScope) -> Result<Vec<Source>, StoreError> {
        let tenant = scope.tenant_id().to_string();
        self.readers()
            .read(move |conn| {
                let sql = format!(
                    "SELECT {SOURCE_COLUMNS} FROM sources WHERE tenant_id = ?1 AND deleted_at IS NULL ORDER BY name"
                );
                let mut sources = query_all(conn, &sql, [tenant], source_from_row)?;
                for source in &mut sources {
                    source.secrets = secrets_of(conn, &source.id)?;
                }
                Ok(sources)
            })
            .await
    }

    async fn source(&self, scope: &TenantScope, id: &str) -> Result<Option<Source>, StoreError> {
        let (tenant, id) = (scope.tenant_id(), id.to_owned());
        self.readers()
            .read(move |conn| load_source(conn, Some(tenant), &id))
            .await
    }

    async fn delete_source(&self, scope: &TenantScope, id: &str, now: Timestamp) -> Result<(), StoreError> {
        let (scope, id) = (scope.clone(), id.to_owned());
        self.writer()
            .write(move |conn| {
                let source = load_source(conn, Some(scope.tenant_id()), &id)?.ok_or(StoreError::NotFound)?;
                conn.execute(
                    "UPDATE sources SET deleted_at = ?2 WHERE id = ?1",
                    params![source.id, millis(now)],
                )
                .map_err(sqlite_error)?;
                conn.execute("DELETE FROM source_secrets WHERE source_id = ?1", [&source.id])
                    .map_err(sqlite_error)?;
                append_for(conn, &scope, now, [drafts::source_changed("source.deleted", &source)])
            })
            .await
    }

    async fn add_source_secret(
        &self,
        scope: &TenantScope,
        id: &str,
        secret: SourceSecret,
        retire_others_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Source, StoreError> {
        let (scope, id) = (scope.clone(), id.to_owned());
        self.writer()
            .write(move |conn| {
                let source = load_source(conn, Some(scope.tenant_id()), &id)?.ok_or(StoreError::NotFound)?;
                conn.execute(
                    "DELETE FROM source_secrets WHERE source_id = ?1 AND expires_at <= ?2",
                    params![source.id, millis(now)],
                )
                .map_err(sqlite_error)?;
                let retired = decide::retire_secrets(&source.secrets, retire_others_at, now);
                for (secret_id, at) in &retired {
                    conn.execute(
                        "UPDATE source_secrets SET expires_at = ?3 WHERE source_id = ?1 AND id = ?2",
                        params![source.id, secret_id, millis(*at)],
                    )
                    .map_err(sqlite_error)?;
                }
                insert_secret(conn, &source, &secret)?;
                append_for(
                    conn,
                    &scope,
                    now,
                    [drafts::source_secret_added(&source.id, &secret, &retired)],
                )?;
                load_source(conn, Some(scope.tenant_id()), &id)?.ok_or_else(|| corrupt_missing("a source"))
            })
            .await
    }

    async fn find_source(&self, id: &str) -> Result<Option<Source>, StoreError> {
        let id = id.to_owned();
        self.readers().read(move |conn| load_source(conn, None, &id)).await
    }

    async fn ingest(
        &self,
        scope: &TenantScope,
        event: InboxEvent,
        job: NewJob,
        dedup_window: Duration,
        refuse_new: Option<StoreError>,
        now: Timestamp,
    ) -> Result<Ingested, StoreError> {
        let (author, tenant) = (Author::of(scope), scope.tenant_id());
        self.writer()
            .write(move |conn| {
                let live = live_keys(conn, &event, now)?;
                match decide::ingest(tenant, &event, &live, job, dedup_window, refuse_new, now)? {
                    Ingest::Duplicate { event_seq } => {
                        let (event_id, job_id): (String, String) = conn
                            .prepare_cached(
                                "UPDATE inbox_events SET duplicates = duplicates + 1, last_duplicate_at = ?3 \
                                 WHERE seq = ?1 AND tenant_id = ?2 RETURNING event_id, job_id",
                            )
                            .and_then(|mut update| {
                                update.query_row(params![event_seq, tenant.to_string(), millis(now)], |row| {
                                    Ok((row.get(0)?, row.get(1)?))
                                })
                            })
                            .map_err(sqlite_error)?;
                        Ok(Ingested {
                            event_seq,
                            event_id,
                            job_id: job_id.parse().map_err(|_| corrupt_missing("an event's job id"))?,
                            job: None,
                            duplicate: true,
                        })
                    }
                    Ingest::New { keys_expire_at, job } => {
                        persist(conn, &job.writes, &author, now)?;
                        let event_seq = store_event(conn, tenant, &event, &job.answer, keys_expire_at)?;
                        Ok(Ingested {
                            event_seq,
                            event_id: event.event_id,
                            job_id: job.answer.id,
                            job: Some(job.answer),
                            duplicate: false,
                        })
                    }
                }
            })
            .await
    }

    async fn list_events(
        &self,
        scope: &TenantScope,
        source_id: &str,
        limit: u32,
        before: Option<i64>,
    ) -> Result<EventPage, StoreError> {
        let (tenant, source_id) = (scope.tenant_id(), source_id.to_owned());
        self.readers()
            .read(move |conn| {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM inbox_events WHERE tenant_id = ?1 AND source_id = ?2 \
                     AND seq < ?3 ORDER BY seq DESC LIMIT ?4"
                );
                let events = query_all(
                    conn,
                    &sql,
                    params![
                        tenant.to_string(),
                        source_id,
                        before.unwrap_or(i64::MAX),
                        i64::from(limit) + 1
                    ],
                    event_from_row,
                )?;
                let events = events
                    .into_iter()
                    .map(|event| with_replays(conn, tenant, event))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(EventPage::from_rows(events, limit))
            })
            .await
    }

    async fn event(
        &self,
        scope: &TenantScope,
        source_id: &str,
        event_id: &str,
    ) -> Result<Option<EventRecord>, StoreError> {
        let (tenant, source_id, event_id) = (scope.tenant_id(), source_id.to_owned(), event_id.to_owned());
        self.readers()
            .read(move |conn| {
                let event = conn
                    .prepare_cached(&format!(
                        "SELECT {EVENT_COLUMNS}, body FROM inbox_events WHERE tenant_id = ?1 AND source_id = ?2 \
                         AND event_id = ?3 ORDER BY seq DESC LIMIT 1"
                    ))
                    .and_then(|mut select| {
                        select
                            .query_row(params![tenant.to_string(), source_id, event_id], event_with_body)
                            .optional()
                    })
                    .map_err(sqlite_error)?;
                event.map(|event| with_replays(conn, tenant, event)).transpose()
            })
            .await
    }

    async fn replay_event(
        &self,
        scope: &TenantScope,
        source_id: &str,
        event_seq: i64,
        job: NewJob,
        now: Timestamp,
    ) -> Result<Job, StoreError> {
        let (author, tenant, source_id) = (Author::of(scope), scope.tenant_id(), source_id.to_owned());
        self.writer()
            .write(move |conn| {
                let event = load_event(conn, tenant, event_seq)?
                    .filter(|event| event.source_id == source_id)
                    .ok_or(StoreError::NotFound)?;
                let decision = decide::replay(tenant, &source_id, &event.event_id, job, now)?;
                persist(conn, &decision.writes, &author, now)?;
                link_job(conn, tenant, &decision.answer, event.seq, true)?;
                Ok(decision.answer)
            })
            .await
    }

    async fn job_event(&self, scope: &TenantScope, job_id: JobId) -> Result<Option<JobEvent>, StoreError> {
        let tenant = scope.tenant_id().to_string();
        self.readers()
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT e.source_id, e.event_id, e.seq, l.replay FROM inbox_jobs l \
                     JOIN inbox_events e ON e.seq = l.event_seq AND e.tenant_id = l.tenant_id \
                     WHERE l.tenant_id = ?1 AND l.job_id = ?2",
                )
                .and_then(|mut select| {
                    select
                        .query_row(params![tenant, job_id.to_string()], |row| {
                            Ok(JobEvent {
                                source_id: row.get(0)?,
                                event_id: row.get(1)?,
                                event_seq: row.get(2)?,
                                replay: row.get(3)?,
                            })
                        })
                        .optional()
                })
                .map_err(sqlite_error)
            })
            .await
    }

    async fn record_signature_failures(
        &self,
        scope: &TenantScope,
        failures: &SignatureFailures,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (scope, draft) = (scope.clone(), drafts::inbox_signature_rejected(failures));
        self.writer()
            .write(move |conn| append_for(conn, &scope, now, [draft]))
            .await
    }

    async fn prune_events(&self, before: Timestamp, limit: u32) -> Result<usize, StoreError> {
        self.writer()
            .write(move |conn| {
                let expired: Vec<i64> = query_all(
                    conn,
                    "SELECT seq FROM inbox_events WHERE keys_expire_at < ?1 ORDER BY keys_expire_at LIMIT ?2",
                    params![millis(before), i64::from(limit)],
                    |row| row.get(0),
                )?;
                let seqs = serde_json::to_string(&expired).expect("integers serialise");
                for sql in [
                    "DELETE FROM inbox_keys WHERE event_seq IN (SELECT value FROM json_each(?1))",
                    "DELETE FROM inbox_jobs WHERE event_seq IN (SELECT value FROM json_each(?1))",
                    "DELETE FROM inbox_events WHERE seq IN (SELECT value FROM json_each(?1))",
                ] {
                    conn.prepare_cached(sql)
                        .and_then(|mut delete| delete.execute([&seqs]))
                        .map_err(sqlite_error)?;
                }
                Ok(expired.len())
            })
            .await
    }
}
