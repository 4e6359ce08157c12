//! The audit chain in PostgreSQL. Writers put records in `audit_intake`
//! with the change they describe, taking no lock; the chainer links them
//! into `audit_records` under the chain's head row lock, so a chain cannot
//! fork however many nodes write, and every read links its chain first. The
//! application role may only read and insert records, and a trigger refuses
//! updates and deletes.

use crate::Transaction;
use async_trait::async_trait;
use steadfast_core::audit::{self, Actor, Draft, Head, Record};
use steadfast_core::{JobId, TenantId, Timestamp};
use steadfast_store::audit::ActorFilter;
use steadfast_store::audit::{AuthFailures, drafts};
use steadfast_store::decide::{self, KeyChange, SigningKeyRecord};
use steadfast_store::{AuditPage, AuditQuery, AuditStore, StoreError, TenantScope};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::rows::{millis, timestamp};
use crate::{Durability, PostgresStore, pg_error, set_tenant, statement};

/// The tenant id of the system chain.
pub(crate) use steadfast_store::audit::SYSTEM_CHAIN;

/// The registered audit signing keys, in position order.
async fn signing_keys_in(tx: &Transaction) -> Result<Vec<SigningKeyRecord>, StoreError> {
    let rows = tx
        .query(
            "SELECT position, public_key, registered_at FROM audit_signing_keys ORDER BY position",
            &[],
        )
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|row| {
            Ok(SigningKeyRecord {
                position: row.get(0),
                public_key: row.get(1),
                registered_at: timestamp(row.get(2))?,
            })
        })
        .collect()
}

fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

fn hash_of(bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    bytes.try_into().map_err(|_| corrupt("an audit hash is not 32 bytes"))
}

const RECORD_COLUMNS: &str = "tenant_id, seq, at, actor_kind, actor_key_id, actor_name, request_id, action, target, job_id, summary, prev_hash, hash";

fn record_from_row(row: &Row) -> Result<Record, StoreError> {
    Ok(Record {
        prev_hash: hash_of(row.get(11))?,
        hash: hash_of(row.get(12))?,
        ..unlinked_from_row(row)?
    })
}

/// A record's content from the first eleven of [`RECORD_COLUMNS`]; its
/// `prev_hash` and `hash` are left empty.
fn unlinked_from_row(row: &Row) -> Result<Record, StoreError> {
    let actor = Actor::decode(row.get(3), row.get(4), row.get(5)).map_err(corrupt)?;
    Ok(Record {
        tenant_id: TenantId(row.get(0)),
        seq: row.get::<_, i64>(1) as u64,
        at: timestamp(row.get(2))?,
        actor,
        request_id: row.get(6),
        action: row.get(7),
        target: row.get(8),
        job_id: row.get::<_, Option<uuid::Uuid>>(9).map(JobId),
        summary: row.get(10),
        prev_hash: [0; 32],
        hash: [0; 32],
    })
}

/// Records `drafts` for `tenant`'s chain inside `tx`, whose tenant setting
/// must be `tenant`. They wait in `audit_intake`, committed with the change
/// they describe, until [`chain`] links them: no lock is taken here, so
/// writers of one tenant do not queue behind each other's commits.
pub(crate) async fn append(
    tx: &Transaction,
    tenant: TenantId,
    actor: &Actor,
    request_id: Option<&str>,
    now: Timestamp,
    drafts: impl IntoIterator<Item = Draft>,
) -> Result<(), StoreError> {
    let drafts: Vec<Draft> = drafts.into_iter().collect();
    if drafts.is_empty() {
        return Ok(());
    }
    let actions: Vec<&str> = drafts.iter().map(|d| d.action).collect();
    let targets: Vec<&str> = drafts.iter().map(|d| d.target.as_str()).collect();
    let job_ids: Vec<Option<uuid::Uuid>> = drafts.iter().map(|d| d.job_id.map(|id| id.0)).collect();
    let summaries: Vec<&str> = drafts.iter().map(|d| d.summary.as_str()).collect();
    // Identity values follow the drafts' order: that is their order in the chain.
    let insert = statement(
        tx,
        "INSERT INTO audit_intake (tenant_id, at, actor_kind, actor_key_id, actor_name, request_id, action, target, \
         job_id, summary) SELECT $1, $2, $3, $4, $5, $6, d.action, d.target, d.job_id, d.summary \
         FROM unnest($7::text[], $8::text[], $9::uuid[], $10::text[]) WITH ORDINALITY AS d(action, target, job_id, summary, n) \
         ORDER BY d.n",
    )
    .await?;
    tx.execute(
        &insert,
        &[
            &tenant.0,
            &millis(now),
            &actor.kind(),
            &actor.key_id().map(|k| k.as_str()),
            &actor.name(),
            &request_id,
            &actions,
            &targets,
            &job_ids,
            &summaries,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Most waiting records one chaining transaction links.
const CHAIN_BATCH: usize = 5000;

/// Whether a chaining pass waits for another chainer of the same chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contended {
    /// A read must see every record committed before it: wait.
    Wait,
    /// The background pass leaves a chain another chainer is linking.
    Skip,
}

/// Links up to `limit` of `tenant`'s waiting records into its chain, in
/// intake order, in one transaction that holds the chain's head lock (so a
/// chain cannot fork, however many nodes chain). Returns how many it linked.
async fn chain_some(
    store: &PostgresStore,
    tenant: TenantId,
    limit: usize,
    contended: Contended,
) -> Result<usize, StoreError> {
    store
        .transaction(Some(tenant), Durability::Durable, async |tx| {
            // Nothing waiting (the usual case for a read): no lock, no write.
            let any_waiting: bool = tx
                .query_one(
                    &statement(tx, "SELECT EXISTS (SELECT 1 FROM audit_intake WHERE tenant_id = $1)").await?,
                    &[&tenant.0],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            if !any_waiting {
                return Ok(0);
            }
            let Some(head) = lock_head(tx, tenant, contended).await? else {
                // Another chainer holds the head and links these records now.
                return Ok(0);
            };
            link_waiting(tx, tenant, head, limit).await
        })
        .await
}

/// Locks `tenant`'s chain head for the transaction (creating it first),
/// and returns it: `Some(None)` for an empty chain, `None` when the head
/// is taken and `contended` says not to wait.
async fn lock_head(
    tx: &Transaction,
    tenant: TenantId,
    contended: Contended,
) -> Result<Option<Option<Head>>, StoreError> {
    tx.execute(
        &statement(
            tx,
            "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING",
        )
        .await?,
        &[&tenant.0, &audit::GENESIS.as_slice()],
    )
    .await
    .map_err(pg_error)?;
    let lock = match contended {
        Contended::Wait => "SELECT seq, hash FROM audit_heads WHERE tenant_id = $1 FOR UPDATE",
        Contended::Skip => "SELECT seq, hash FROM audit_heads WHERE tenant_id = $1 FOR UPDATE SKIP LOCKED",
    };
    let Some(row) = tx
        .query_opt(&statement(tx, lock).await?, &[&tenant.0])
        .await
        .map_err(pg_error)?
    else {
        return Ok(None);
    };
    let seq: i64 = row.get(0);
    let head = (seq > 0)
        .then(|| hash_of(row.get(1)).map(|hash| Head { seq: seq as u64, hash }))
        .transpose()?;
    Ok(Some(head))
}

/// Links up to `limit` waiting records after `head`, under the head lock,
/// and moves the head. Returns how many it linked.
async fn link_waiting(
    tx: &Transaction,
    tenant: TenantId,
    mut head: Option<Head>,
    limit: usize,
) -> Result<usize, StoreError> {
    // Read under the lock: another chainer's links are committed by now.
    let rows = tx
        .query(
            &statement(
                tx,
                "SELECT tenant_id, 0::bigint, at, actor_kind, actor_key_id, actor_name, request_id, action, target, \
                 job_id, summary, id FROM audit_intake WHERE tenant_id = $1 ORDER BY id LIMIT $2",
            )
            .await?,
            &[&tenant.0, &(limit as i64)],
        )
        .await
        .map_err(pg_error)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut records = Vec::with_capacity(rows.len());
    for row in &rows {
        ids.push(row.get::<_, i64>(11));
        let record = audit::link(head, unlinked_from_row(row)?);
        head = Some(Head {
            seq: record.seq,
            hash: record.hash,
        });
        records.push(record);
    }
    insert_records(tx, tenant, &records).await?;
    tx.execute(
        &statement(tx, "DELETE FROM audit_intake WHERE tenant_id = $1 AND id = ANY($2)").await?,
        &[&tenant.0, &ids],
    )
    .await
    .map_err(pg_error)?;
    let head = head.expect("at least one record was linked");
    tx.execute(
        &statement(tx, "UPDATE audit_heads SET seq = $2, hash = $3 WHERE tenant_id = $1").await?,
        &[&tenant.0, &(head.seq as i64), &head.hash.as_slice()],
    )
    .await
    .map_err(pg_error)?;
    Ok(records.len())
}

/// Inserts linked records of `tenant`'s chain in one statement.
async fn insert_records(tx: &Transaction, tenant: TenantId, records: &[Record]) -> Result<(), StoreError> {
    let column = |f: fn(&Record) -> Option<&str>| records.iter().map(f).collect::<Vec<_>>();
    let seqs: Vec<i64> = records.iter().map(|r| r.seq as i64).collect();
    let ats: Vec<i64> = records.iter().map(|r| millis(r.at)).collect();
    let job_ids: Vec<Option<uuid::Uuid>> = records.iter().map(|r| r.job_id.map(|id| id.0)).collect();
    let prev_hashes: Vec<&[u8]> = records.iter().map(|r| r.prev_hash.as_slice()).collect();
    let hashes: Vec<&[u8]> = records.iter().map(|r| r.hash.as_slice()).collect();
    tx.execute(
        &statement(
            tx,
            &format!(
                "INSERT INTO audit_records ({RECORD_COLUMNS}) SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], \
             $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::uuid[], $11::text[], \
             $12::bytea[], $13::bytea[])"
            ),
        )
        .await?,
        &[
            &tenant.0,
            &seqs,
            &ats,
            &column(|r| Some(r.actor.kind())),
            &column(|r| r.actor.key_id().map(|k| k.as_str())),
            &column(|r| Some(r.actor.name())),
            &column(|r| r.request_id.as_deref()),
            &column(|r| Some(r.action.as_str())),
            &column(|r| Some(r.target.as_str())),
            &job_ids,
            &column(|r| Some(r.summary.as_str())),
            &prev_hashes,
            &hashes,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Links every record of `tenant` committed before the call: audit reads
/// call this first, so what they show is the whole chain so far. It is also
/// their durability barrier. Leases commit without waiting for the WAL
/// flush, but their records become readable only once a chainer links
/// them, in a transaction that commits synchronously: PostgreSQL makes such
/// a commit visible only after flushing the WAL through it, earlier
/// commits (the lease's) included. So no read shows, exports or signs a
/// record a crash could take back, and the read itself need not flush.
async fn chain(store: &PostgresStore, tenant: TenantId) -> Result<(), StoreError> {
    // Writers keep adding while this runs; a short batch means it caught up.
    // The bound only guards against a pathological stream of appends.
    for _ in 0..1000 {
        if chain_some(store, tenant, CHAIN_BATCH, Contended::Wait).await? < CHAIN_BATCH {
            return Ok(());
        }
    }
    Ok(())
}

/// Chains listed per look at the intake by the background pass.
const TENANTS_PER_PAGE: i32 = 1000;

/// The background chainer's pass: links waiting records of every chain,
/// a page of chains at a time. A chain that fails is logged and left for
/// the next pass (or its next read); the others are still linked.
pub(crate) async fn chain_waiting(store: &PostgresStore, limit: usize) -> Result<usize, StoreError> {
    let mut linked = 0;
    let mut after = uuid::Uuid::nil();
    loop {
        let tenants: Vec<TenantId> = store
            .client()
            .await?
            .query(
                "SELECT tenant_id FROM steadfast_audit_intake_tenants($1, $2)",
                &[&after, &TENANTS_PER_PAGE],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| TenantId(row.get(0)))
            .collect();
        for &tenant in &tenants {
            match chain_some(store, tenant, limit, Contended::Skip).await {
                Ok(count) => linked += count,
                Err(error) => tracing::warn!(%error, tenant_id = %tenant, "linking a chain's audit records failed"),
            }
        }
        match tenants.last() {
            Some(last) if tenants.len() == TENANTS_PER_PAGE as usize => after = last.0,
            _ => return Ok(linked),
        }
    }
}

/// Appends on behalf of a request's scope.
pub(crate) async fn append_for(
    tx: &Transaction,
    scope: &TenantScope,
    now: Timestamp,
    drafts: impl IntoIterator<Item = Draft>,
) -> Result<(), StoreError> {
    append(tx, scope.tenant_id(), scope.actor(), scope.request_id(), now, drafts).await
}

async fn head_of(tx: &Transaction, table: &str, tenant: TenantId) -> Result<Option<Head>, StoreError> {
    let row = tx
        .query_opt(
            &statement(
                tx,
                &format!("SELECT seq, hash FROM {table} WHERE tenant_id = $1 AND seq > 0"),
            )
            .await?,
            &[&tenant.0],
        )
        .await
        .map_err(pg_error)?;
    row.map(|row| {
        Ok(Head {
            seq: row.get::<_, i64>(0) as u64,
            hash: hash_of(row.get(1))?,
        })
    })
    .transpose()
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn audit_records(&self, scope: &TenantScope, query: AuditQuery) -> Result<AuditPage, StoreError> {
        chain(self, scope.tenant_id()).await?;
        let tenant = scope.tenant_id().0;
        let since = query.from().map(millis);
        let until = query.until.map(millis);
        let after = query.after.map(|cursor| (millis(cursor.at), cursor.seq as i64));
        let job_id = query.job_id.map(|id| id.0);
        let limit = i64::from(query.limit) + 1;
        let mut sql = format!("SELECT {RECORD_COLUMNS} FROM audit_records WHERE tenant_id = $1");
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant];
        if let Some(since) = &since {
            params.push(since);
            sql.push_str(&format!(" AND at >= ${}", params.len()));
        }
        if let Some(until) = &until {
            params.push(until);
            sql.push_str(&format!(" AND at < ${}", params.len()));
        }
        let actor = query.actor_filter().map(|filter| match filter {
            ActorFilter::Kind(kind) => ("actor_kind", kind.to_owned()),
            ActorFilter::KeyId(key_id) => ("actor_key_id", key_id.to_owned()),
        });
        if let Some((column, value)) = &actor {
            params.push(value);
            sql.push_str(&format!(" AND {column} = ${}", params.len()));
        }
        if let Some(action) = &query.action {
            params.push(action);
            sql.push_str(&format!(" AND action = ${}", params.len()));
        }
        if let Some(job_id) = &job_id {
            params.push(job_id);
            sql.push_str(&format!(" AND job_id = ${}", params.len()));
        }
        if let Some((at, seq)) = &after {
            params.push(at);
            params.push(seq);
            let (at, seq) = (params.len() - 1, params.len());
            sql.push_str(&format!(" AND (at > ${at} OR seq > ${seq})"));
        }
        params.push(&limit);
        // (at, seq) order reads the (tenant, at, seq) index from the cursor on.
        sql.push_str(&format!(" ORDER BY at, seq LIMIT ${}", params.len()));
        let records = self
            .transaction(Some(scope.tenant_id()), Durability::Durable, async |tx| {
                let rows = tx.query(&statement(tx, &sql).await?, &params).await.map_err(pg_error)?;
                rows.iter().map(record_from_row).collect::<Result<Vec<_>, _>>()
            })
            .await?;
        Ok(AuditPage::from_rows(records, query.limit))
    }

    async fn audit_scan(&self, scope: &TenantScope, after: u64, limit: u32) -> Result<Vec<Record>, StoreError> {
        chain(self, scope.tenant_id()).await?;
        self.transaction(Some(scope.tenant_id()), Durability::Durable, async |tx| {
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM audit_records WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
            );
            let rows = tx
                .query(
                    &statement(tx, &sql).await?,
                    &[&scope.tenant_id().0, &(after as i64), &i64::from(limit)],
                )
                .await
                .map_err(pg_error)?;
            rows.iter().map(record_from_row).collect()
        })
        .await
    }

    async fn audit_head(&self, scope: &TenantScope) -> Result<Option<Head>, StoreError> {
        chain(self, scope.tenant_id()).await?;
        self.transaction(Some(scope.tenant_id()), Durability::Durable, async |tx| {
            head_of(tx, "audit_heads", scope.tenant_id()).await
        })
        .await
    }

    async fn check_audit_storage(&self, _scope: &TenantScope) -> Result<(), StoreError> {
        // Each record is a row keyed by (tenant, seq); nothing beside the chain.
        Ok(())
    }

    async fn audit_base(&self, scope: &TenantScope) -> Result<Option<Head>, StoreError> {
        self.transaction(Some(scope.tenant_id()), Durability::Durable, async |tx| {
            head_of(tx, "audit_bases", scope.tenant_id()).await
        })
        .await
    }

    async fn record_auth_failures(&self, failures: &AuthFailures, now: Timestamp) -> Result<(), StoreError> {
        let tenant = match &failures.key_id {
            Some(key_id) => self
                .client()
                .await?
                .query_opt("SELECT tenant_id FROM steadfast_key_by_id($1)", &[&key_id.as_str()])
                .await
                .map_err(pg_error)?
                .map_or(SYSTEM_CHAIN, |row| TenantId(row.get(0))),
            None => SYSTEM_CHAIN,
        };
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            append(tx, tenant, &Actor::System, None, now, [drafts::auth_failed(failures)]).await
        })
        .await
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        self.transaction(None, Durability::Durable, async |tx| signing_keys_in(tx).await)
            .await
    }

    async fn register_signing_key(
        &self,
        public_key: &str,
        change: KeyChange,
        now: Timestamp,
    ) -> Result<Option<SigningKeyRecord>, StoreError> {
        self.transaction(Some(SYSTEM_CHAIN), Durability::Durable, async |tx| {
            // Nodes starting at once register one key, in turn.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('steadfast.audit_signing_keys'))",
                &[],
            )
            .await
            .map_err(pg_error)?;
            let registered = signing_keys_in(tx).await?;
            let Some(new) = decide::register_signing_key(&registered, public_key, change, now)? else {
                return Ok(None);
            };
            tx.execute(
                "INSERT INTO audit_signing_keys (position, public_key, registered_at) VALUES ($1, $2, $3)",
                &[
                    &new.record.position,
                    &new.record.public_key,
                    &millis(new.record.registered_at),
                ],
            )
            .await
            .map_err(pg_error)?;
            append(tx, SYSTEM_CHAIN, &new.actor, None, now, [new.draft]).await?;
            Ok(Some(new.record))
        })
        .await
    }

    async fn prune_audit(&self, before: Timestamp, limit: u32, now: Timestamp) -> Result<usize, StoreError> {
        self.transaction(None, Durability::Durable, async |tx| {
            let rows = tx
                .query(
                    &statement(
                        tx,
                        "SELECT tenant_id, through_seq, hash, removed FROM steadfast_prune_audit($1, $2)",
                    )
                    .await?,
                    &[&millis(before), &(limit as i32)],
                )
                .await
                .map_err(pg_error)?;
            let mut removed = 0;
            for row in rows {
                let tenant = TenantId(row.get(0));
                let base = Head {
                    seq: row.get::<_, i64>(1) as u64,
                    hash: hash_of(row.get(2))?,
                };
                let count = row.get::<_, i32>(3) as usize;
                set_tenant(tx, tenant).await?;
                append(
                    tx,
                    tenant,
                    &Actor::System,
                    None,
                    now,
                    [drafts::audit_pruned(base, count)],
                )
                .await?;
                removed += count;
            }
            Ok(removed)
        })
        .await
    }
}
