use std::time::Duration;

use async_trait::async_trait;
use steadfast_core::{Job, JobId, QueueName, TenantId, Timestamp};
use steadfast_store::audit::drafts;
use steadfast_store::decide::{self, Author, Ingest, LiveInboxKey};
use steadfast_store::{
    EventPage, EventRecord, InboxEvent, InboxStore, Ingested, JobEvent, NewJob, SignatureFailures, Source,
    SourceSecret, StoreError, TenantScope,
};
use tokio_postgres::Row;

use crate::audit::append_for;
use crate::persist::persist;
use crate::rows::{millis, optional_timestamp, timestamp};
use crate::{Durability, PostgresStore, Transaction, pg_error, statement};

fn duration(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

const SOURCE_COLUMNS: &str = "id, tenant_id, name, kind, queue, config, tolerance_ms, dedup_window_ms, created_at";

fn source_from_row(row: &Row) -> Result<Source, StoreError> {
    Ok(Source {
        id: row.get(0),
        tenant_id: TenantId(row.get(1)),
        name: row.get(2),
        kind: row.get(3),
        queue: QueueName::new(row.get::<_, String>(4)).map_err(corrupt)?,
        config: row.get(5),
        tolerance: duration(row.get(6)),
        dedup_window: duration(row.get(7)),
        created_at: timestamp(row.get(8))?,
        secrets: Vec::new(),
    })
}

fn secret_from_row(row: &Row) -> Result<SourceSecret, StoreError> {
    Ok(SourceSecret {
        id: row.get(0),
        value: row.get(1),
        created_at: timestamp(row.get(2))?,
        expires_at: optional_timestamp(row.get(3))?,
    })
}

async fn secrets_of(tx: &Transaction, source_id: &str) -> Result<Vec<SourceSecret>, StoreError> {
    let rows = tx
        .query(
            &statement(
                tx,
                "SELECT id, secret, created_at, expires_at FROM source_secrets WHERE source_id = $1 \
                 ORDER BY created_at, id",
            )
            .await?,
            &[&source_id],
        )
        .await
        .map_err(pg_error)?;
    rows.iter().map(secret_from_row).collect()
}

/// A live source of the transaction's tenant, with its secrets; locked
/// with `FOR UPDATE` when `lock` (changes to one source serialise).
async fn load_source(tx: &Transaction, tenant: TenantId, id: &str, lock: bool) -> Result<Option<Source>, StoreError> {
    let sql = format!(
        "SELECT {SOURCE_COLUMNS} FROM sources WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let Some(row) = tx.query_opt(&sql, &[&id, &tenant.0]).await.map_err(pg_error)? else {
        return Ok(None);
    };
    let mut source = source_from_row(&row)?;
    source.secrets = secrets_of(tx, &source.id).await?;
    Ok(Some(source))
}

async fn insert_secret(tx: &Transaction, source: &Source, secret: &SourceSecret) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO source_secrets (source_id, id, tenant_id, secret, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &source.id,
            &secret.id,
            &source.tenant_id.0,
            &secret.value,
            &millis(secret.created_at),
            &secret.expires_at.map(millis),
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// The columns [`event_from_row`] reads, in order; the body, when
/// selected, comes after them.
const EVENT_COLUMNS: &str = "seq, source_id, event_id, received_at, body_sha256, body_bytes, headers, \
     verification, secret_id, duplicates, last_duplicate_at, job_id";

fn event_from_row(row: &Row) -> Result<EventRecord, StoreError> {
    Ok(EventRecord {
        seq: row.get(0),
        source_id: row.get(1),
        event_id: row.get(2),
        received_at: timestamp(row.get(3))?,
        body: (row.len() > 12).then(|| row.get(12)),
        body_sha256: row.get(4),
        body_bytes: row.get::<_, i64>(5).max(0) as u64,
        headers: row.get(6),
        verification: row.get(7),
        secret_id: row.get(8),
        duplicates: row.get::<_, i64>(9).max(0) as u64,
        last_duplicate_at: optional_timestamp(row.get(10))?,
        job_id: JobId(row.get(11)),
        replays: Vec::new(),
    })
}

/// The events of `rows`, each with the jobs replayed from it (oldest first).
async fn with_replays(tx: &Transaction, tenant: TenantId, rows: &[Row]) -> Result<Vec<EventRecord>, StoreError> {
    let mut events = rows.iter().map(event_from_row).collect::<Result<Vec<_>, _>>()?;
    if events.is_empty() {
        return Ok(events);
    }
    let seqs: Vec<i64> = events.iter().map(|event| event.seq).collect();
    let replays = tx
        .query(
            &statement(
                tx,
                "SELECT event_seq, job_id FROM inbox_jobs WHERE tenant_id = $1 AND event_seq = ANY($2) AND replay \
                 ORDER BY linked",
            )
            .await?,
            &[&tenant.0, &seqs],
        )
        .await
        .map_err(pg_error)?;
    for row in &replays {
        let seq: i64 = row.get(0);
        if let Some(event) = events.iter_mut().find(|event| event.seq == seq) {
            event.replays.push(JobId(row.get(1)));
        }
    }
    Ok(events)
}

async fn load_event(tx: &Transaction, tenant: TenantId, seq: i64) -> Result<Option<EventRecord>, StoreError> {
    let rows = tx
        .query(
            &statement(
                tx,
                &format!("SELECT {EVENT_COLUMNS} FROM inbox_events WHERE seq = $1 AND tenant_id = $2"),
            )
            .await?,
            &[&seq, &tenant.0],
        )
        .await
        .map_err(pg_error)?;
    Ok(with_replays(tx, tenant, &rows).await?.pop())
}

/// The claims on `event`'s dedup keys still inside their window. Each key
/// is locked for the transaction first (in one order): a concurrent
/// delivery of the same event waits here until this one commits, then sees
/// its claim, so concurrent duplicates make one job.
async fn live_keys(tx: &Transaction, event: &InboxEvent, now: Timestamp) -> Result<Vec<LiveInboxKey>, StoreError> {
    tx.execute(
        &statement(
            tx,
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended('inbox/' || $1 || '/' || k, 0) \
             AS h FROM unnest($2::text[]) AS k) AS hashes ORDER BY h",
        )
        .await?,
        &[&event.source_id, &event.dedup_keys],
    )
    .await
    .map_err(pg_error)?;
    let rows = tx
        .query(
            &statement(
                tx,
                "SELECT key, event_seq FROM inbox_keys WHERE source_id = $1 AND key = ANY($2) AND expires_at > $3",
            )
            .await?,
            &[&event.source_id, &event.dedup_keys, &millis(now)],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|row| LiveInboxKey {
            key: row.get(0),
            event_seq: row.get(1),
        })
        .collect())
}

async fn link_job(
    tx: &Transaction,
    tenant: TenantId,
    job: &Job,
    event_seq: i64,
    replay: bool,
) -> Result<(), StoreError> {
    tx.execute(
        &statement(
            tx,
            "INSERT INTO inbox_jobs (tenant_id, job_id, event_seq, replay) VALUES ($1, $2, $3, $4)",
        )
        .await?,
        &[&tenant.0, &job.id.0, &event_seq, &replay],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Stores a new event, claims its keys (taking over claims whose window
/// passed) and links its job, in one statement. Answers the event's `seq`.
async fn store_event(
    tx: &Transaction,
    tenant: TenantId,
    event: &InboxEvent,
    job: &Job,
    keys_expire_at: Timestamp,
) -> Result<i64, StoreError> {
    let row = tx
        .query_one(
            &statement(
                tx,
                "WITH event AS ( \
                    INSERT INTO inbox_events (tenant_id, source_id, event_id, received_at, body, headers, verification, \
                    secret_id, job_id, keys_expire_at, body_sha256, body_bytes) \
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $12, $13) RETURNING seq), \
                 claimed AS ( \
                    INSERT INTO inbox_keys (source_id, key, tenant_id, event_seq, expires_at) \
                    SELECT $2, k, $1, event.seq, $10 FROM event, unnest($11::text[]) AS k \
                    ON CONFLICT (source_id, key) DO UPDATE SET event_seq = EXCLUDED.event_seq, expires_at = EXCLUDED.expires_at), \
                 linked AS ( \
                    INSERT INTO inbox_jobs (tenant_id, job_id, event_seq, replay) SELECT $1, $9, event.seq, false FROM event) \
                 SELECT seq FROM event",
            )
            .await?,
            &[
                &tenant.0,
                &event.source_id,
                &event.event_id,
                &millis(event.received_at),
                &event.body,
                &event.headers,
                &event.verification,
                &event.secret_id,
                &job.id.0,
                &millis(keys_expire_at),
                &event.dedup_keys,
                &event.body_sha256,
                &(event.body.len() as i64),
            ],
        )
        .await
        .map_err(pg_error)?;
    Ok(row.get(0))
}

fn vanished(what: &str) -> StoreError {
    corrupt(format!("{what} vanished inside its transaction"))
}

#[async_trait]
impl InboxStore for PostgresStore {
    async fn create_source(
        &self,
        scope: &TenantScope,
        source: Source,
        max_sources: usize,
        now: Timestamp,
    ) -> Result<Source, StoreError> {
        let source = Source {
            tenant_id: scope.tenant_id(),
            ..source
        };
        self.transaction(Some(scope.tenant_id()), Durability::Durable, async |tx| {
            // One creation at a time per tenant, so the count holds.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('steadfast.sources:' || $1, 0))",
                &[&source.tenant_id.0.to_string()],
            )
            .await
            .map_err(pg_error)?;
            let live: i64 = tx
                .query_one(
                    "SELECT count(*) FROM sources WHERE tenant_id = $1 AND deleted_at IS NULL",
                    &[&source.tenant_id.0],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            decide::within_source_limit(live.max(0) as usize, max_sources)?;
            let inserted = tx
                .execute(
                    &format!(
                        "INSERT INTO sources ({SOURCE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT DO NOTHING"
                    ),
                    &[
                        &source.id,
                        &source.tenant_id.0,
                        &source.name,
                        &source.kind,
                        &source.queue.as_str(),
                        &source.config,
                        &(source.tolerance.as_millis() as i64),
                        &(source.dedup_window.as_millis() as i64),
                        &millis(source.created_at),
                    ],
                )
                .await
                .map_err(pg_error)?;
            if inserted == 0 {
                return Err(StoreError::AlreadyExists);
            }
            for secret in &source.secrets {
                insert_secret(tx, &source, secret).await?;
            }
            append_for(tx, scope, now, [drafts::source_changed("source.created", &source)]).await?;
            Ok(source)
        })
        .await
    }

    async fn list_sources(&self, scope: &TenantScope) -> Result<Vec<Source>, StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let rows = tx
                .query(
                    &format!(
                        "SELECT {SOURCE_COLUMNS} FROM sources WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY name"
                    ),
                    &[&tenant.0],
                )
                .await
                .map_err(pg_error)?;
            let mut sources = Vec::with_capacity(rows.len());
            for row in &rows {
                let mut source = source_from_row(row)?;
                source.secrets = secrets_of(tx, &source.id).await?;
                sources.push(source);
            }
            Ok(sources)
        })
        .await
    }

    async fn source(&self, scope: &TenantScope, id: &str) -> Result<Option<Source>, StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            load_source(tx, tenant, id, false).await
        })
        .await
    }

    async fn delete_source(&self, scope: &TenantScope, id: &str, now: Timestamp) -> Result<(), StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let source = load_source(tx, tenant, id, true).await?.ok_or(StoreError::NotFound)?;
            tx.execute(
                "UPDATE sources SET deleted_at = $3 WHERE id = $1 AND tenant_id = $2",
                &[&source.id, &tenant.0, &millis(now)],
            )
            .await
            .map_err(pg_error)?;
            tx.execute("DELETE FROM source_secrets WHERE source_id = $1", &[&source.id])
                .await
                .map_err(pg_error)?;
            append_for(tx, scope, now, [drafts::source_changed("source.deleted", &source)]).await
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
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let source = load_source(tx, tenant, id, true).await?.ok_or(StoreError::NotFound)?;
            tx.execute(
                "DELETE FROM source_secrets WHERE source_id = $1 AND expires_at <= $2",
                &[&source.id, &millis(now)],
            )
            .await
            .map_err(pg_error)?;
            let retired = decide::retire_secrets(&source.secrets, retire_others_at, now);
            for (secret_id, at) in &retired {
                tx.execute(
                    "UPDATE source_secrets SET expires_at = $3 WHERE source_id = $1 AND id = $2",
                    &[&source.id, secret_id, &millis(*at)],
                )
                .await
                .map_err(pg_error)?;
            }
            insert_secret(tx, &source, &secret).await?;
            append_for(
                tx,
                scope,
                now,
                [drafts::source_secret_added(&source.id, &secret, &retired)],
            )
            .await?;
            load_source(tx, tenant, id, false)
                .await?
                .ok_or_else(|| vanished("a source"))
        })
        .await
    }

    async fn find_source(&self, id: &str) -> Result<Option<Source>, StoreError> {
        self.transaction(None, Durability::Durable, async |tx| {
            let found = tx
                .query_opt(
                    &statement(tx, &format!("SELECT {SOURCE_COLUMNS} FROM steadfast_find_source($1)")).await?,
                    &[&id],
                )
                .await
                .map_err(pg_error)?;
            let Some(row) = found else {
                return Ok(None);
            };
            let mut source = source_from_row(&row)?;
            let secrets = tx
                .query(
                    &statement(
                        tx,
                        "SELECT id, secret, created_at, expires_at FROM steadfast_source_secrets($1)",
                    )
                    .await?,
                    &[&id],
                )
                .await
                .map_err(pg_error)?;
            source.secrets = secrets.iter().map(secret_from_row).collect::<Result<_, _>>()?;
            Ok(Some(source))
        })
        .await
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
        let tx = Transaction::unopened(self.client().await?);
        let result = async {
            // As in `decided`: the keys' locks and claims are read in the
            // same flight as the opening, which reaches the server first.
            let opening = Self::opening(Some(tenant), Durability::Durable);
            let (opened, live) = futures::join!(tx.batch_execute(&opening), live_keys(&tx, &event, now));
            opened.map_err(pg_error)?;
            match decide::ingest(tenant, &event, &live?, job, dedup_window, refuse_new, now)? {
                Ingest::Duplicate { event_seq } => {
                    let row = tx
                        .query_opt(
                            &statement(
                                &tx,
                                "UPDATE inbox_events SET duplicates = duplicates + 1, last_duplicate_at = $3 \
                                 WHERE seq = $1 AND tenant_id = $2 RETURNING event_id, job_id",
                            )
                            .await?,
                            &[&event_seq, &tenant.0, &millis(now)],
                        )
                        .await
                        .map_err(pg_error)?
                        .ok_or_else(|| vanished("an event"))?;
                    Ok(Ingested {
                        event_seq,
                        event_id: row.get(0),
                        job_id: JobId(row.get(1)),
                        job: None,
                        duplicate: true,
                    })
                }
                Ingest::New { keys_expire_at, job } => {
                    let job = *job;
                    // The event row references the job by id only: both go in one flight.
                    let (persisted, stored) = futures::join!(
                        persist(&tx, Some(tenant), job.writes, &author, now),
                        store_event(&tx, tenant, &event, &job.answer, keys_expire_at)
                    );
                    // Whichever failed first aborted the transaction; the
                    // other then only says so (25P02).
                    let seq = match (persisted, stored) {
                        (Ok(()), stored) => stored?,
                        (Err(persisting), Err(storing)) if crate::after_failure(&persisting) => return Err(storing),
                        (Err(persisting), _) => return Err(persisting),
                    };
                    Ok(Ingested {
                        event_seq: seq,
                        event_id: event.event_id.clone(),
                        job_id: job.answer.id,
                        job: Some(job.answer),
                        duplicate: false,
                    })
                }
            }
        }
        .await;
        let ingested = crate::finish(tx, result, pg_error).await?;
        if let Some(job) = &ingested.job {
            self.announce(&[(tenant, job.queue.clone())]);
        }
        Ok(ingested)
    }

    async fn list_events(
        &self,
        scope: &TenantScope,
        source_id: &str,
        limit: u32,
        before: Option<i64>,
    ) -> Result<EventPage, StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let rows = tx
                .query(
                    &statement(
                        tx,
                        &format!(
                            "SELECT {EVENT_COLUMNS} FROM inbox_events WHERE tenant_id = $1 AND source_id = $2 \
                             AND seq < $3 ORDER BY seq DESC LIMIT $4"
                        ),
                    )
                    .await?,
                    &[
                        &tenant.0,
                        &source_id,
                        &before.unwrap_or(i64::MAX),
                        &(i64::from(limit) + 1),
                    ],
                )
                .await
                .map_err(pg_error)?;
            Ok(EventPage::from_rows(with_replays(tx, tenant, &rows).await?, limit))
        })
        .await
    }

    async fn event(
        &self,
        scope: &TenantScope,
        source_id: &str,
        event_id: &str,
    ) -> Result<Option<EventRecord>, StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let rows = tx
                .query(
                    &statement(
                        tx,
                        &format!(
                            "SELECT {EVENT_COLUMNS}, body FROM inbox_events WHERE tenant_id = $1 AND source_id = $2 \
                             AND event_id = $3 ORDER BY seq DESC LIMIT 1"
                        ),
                    )
                    .await?,
                    &[&tenant.0, &source_id, &event_id],
                )
                .await
                .map_err(pg_error)?;
            Ok(with_replays(tx, tenant, &rows).await?.pop())
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
        let (author, tenant) = (Author::of(scope), scope.tenant_id());
        let job = self
            .transaction(Some(tenant), Durability::Durable, async |tx| {
                let event = load_event(tx, tenant, event_seq)
                    .await?
                    .filter(|event| event.source_id == source_id)
                    .ok_or(StoreError::NotFound)?;
                let decision = decide::replay(tenant, source_id, &event.event_id, job, now)?;
                persist(tx, Some(tenant), decision.writes, &author, now).await?;
                link_job(tx, tenant, &decision.answer, event.seq, true).await?;
                Ok(decision.answer)
            })
            .await?;
        self.announce(&[(tenant, job.queue.clone())]);
        Ok(job)
    }

    async fn job_event(&self, scope: &TenantScope, job_id: JobId) -> Result<Option<JobEvent>, StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let row = tx
                .query_opt(
                    &statement(
                        tx,
                        "SELECT e.source_id, e.event_id, e.seq, l.replay FROM inbox_jobs l \
                         JOIN inbox_events e ON e.seq = l.event_seq AND e.tenant_id = l.tenant_id \
                         WHERE l.tenant_id = $1 AND l.job_id = $2",
                    )
                    .await?,
                    &[&tenant.0, &job_id.0],
                )
                .await
                .map_err(pg_error)?;
            Ok(row.map(|row| JobEvent {
                source_id: row.get(0),
                event_id: row.get(1),
                event_seq: row.get(2),
                replay: row.get(3),
            }))
        })
        .await
    }

    async fn record_signature_failures(
        &self,
        scope: &TenantScope,
        failures: &SignatureFailures,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.transaction(Some(scope.tenant_id()), Durability::Durable, async |tx| {
            append_for(tx, scope, now, [drafts::inbox_signature_rejected(failures)]).await
        })
        .await
    }

    async fn prune_events(&self, before: Timestamp, limit: u32) -> Result<usize, StoreError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        self.transaction(None, Durability::Durable, async |tx| {
            let row = tx
                .query_one("SELECT steadfast_prune_inbox($1, $2)", &[&millis(before), &limit])
                .await
                .map_err(pg_error)?;
            Ok(row.get::<_, i32>(0).max(0) as usize)
        })
        .await
    }
}
