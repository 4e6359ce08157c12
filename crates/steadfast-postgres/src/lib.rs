//! Steadfast's PostgreSQL storage, for teams that run many Steadfast nodes
//! on one database.
//!
//! Tenant isolation is enforced by the database: every tenant table has
//! row-level security FORCEd, and each transaction sets the tenant with
//! `set_config('steadfast.tenant_id', …, true)`, so a pooled connection never
//! carries one tenant into another's transaction and an unset tenant sees
//! nothing. Steadfast connects as a role that is neither the tables' owner,
//! nor superuser, nor BYPASSRLS ([`schema::check`]); the few operations that
//! must cross tenants (authentication by key id, the background sweeps) go
//! through narrow SECURITY DEFINER functions.
//!
//! Many nodes: leasing locks with `FOR UPDATE SKIP LOCKED`, sweeps lock the
//! due rows they act on, and `NOTIFY steadfast_ready` wakes long-polling
//! workers on every node. Module names mirror the embedded store's.
//!
//! Only this crate contains PostgreSQL SQL.

mod audit;
mod jobs;
mod keys;
mod listen;
mod maintenance;
mod persist;
mod rows;
pub mod schema;
mod slos;
mod tenants;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
mod workflows;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use deadpool_postgres::Transaction;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use steadfast_core::{QueueName, TenantId, Timestamp};
use steadfast_store::decide::{Author, Decision};
use steadfast_store::{StoreError, TenantScope};
use tokio_postgres::NoTls;

pub use schema::SchemaError;

/// Connections in the pool of one node.
const POOL_SIZE: usize = 16;

/// The PostgreSQL store. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    config: tokio_postgres::Config,
    filter: TenantFilter,
    announcements: Arc<Announcements>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

/// Whether queries also filter by tenant themselves, on top of row-level
/// security. Always `Enforced`, except in the test that proves the database
/// alone isolates tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TenantFilter {
    Enforced,
    DisabledForTests,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid database URL: {0}")]
    Url(tokio_postgres::Error),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// Parses a `postgres://` URL and sets what every Steadfast connection uses.
pub fn config(url: &str) -> Result<tokio_postgres::Config, ConnectError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(ConnectError::Url)?;
    // Nothing Steadfast runs takes long; a stuck query or lock is a fault to
    // report (503), never a request that hangs. Generic plans: every
    // statement is a key lookup or an index head, and a plan custom-made for
    // one tenant trusts statistics that may not know the tenant yet (a new
    // tenant's "one row" turned a 100-job update into a walk of all its jobs).
    // A node cut off mid-transaction must not hold row locks (a job's, a
    // chain head's) until TCP gives up: the server ends such a session. The
    // isolation level is pinned, whatever the database's default: the
    // chainer relies on each statement seeing what committed before it.
    config.options(format!(
        "-c search_path={} -c statement_timeout=10000 -c lock_timeout=5000 -c plan_cache_mode=force_generic_plan \
         -c idle_in_transaction_session_timeout=10000 -c default_transaction_isolation=read\\ committed",
        schema::SCHEMA
    ));
    config.connect_timeout(Duration::from_secs(5));
    config.application_name("steadfast");
    Ok(config)
}

impl PostgresStore {
    /// Connects as the application role and checks the role and the schema.
    pub async fn connect(url: &str) -> Result<PostgresStore, ConnectError> {
        let config = config(url)?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let timeouts = Timeouts {
            wait: Some(Duration::from_secs(5)),
            create: Some(Duration::from_secs(5)),
            recycle: Some(Duration::from_secs(5)),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .timeouts(timeouts)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| ConnectError::Connect(e.to_string()))?;
        let client = pool.get().await.map_err(|e| ConnectError::Connect(e.to_string()))?;
        schema::check(&client).await?;
        let announcements = Arc::new(Announcements::default());
        tokio::spawn(announce_ready(pool.clone(), Arc::downgrade(&announcements)));
        Ok(PostgresStore {
            pool,
            config,
            filter: TenantFilter::Enforced,
            announcements,
        })
    }

    /// Test-only: the store's own `tenant_id` filters are left out of the
    /// main queries, so a test can show row-level security alone isolates tenants.
    pub fn without_tenant_filter_for_tests(mut self) -> PostgresStore {
        self.filter = TenantFilter::DisabledForTests;
        self
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|error| {
            tracing::warn!(%error, "no database connection");
            StoreError::Unavailable("the database is unreachable".into())
        })
    }
}

/// PostgreSQL errors are never the client's fault; the detail goes to logs.
pub(crate) fn pg_error(error: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => error.to_string(),
    })
}

/// The result of an insert whose unique violation is the client's answer
/// (`AlreadyExists`), not a fault.
pub(crate) fn inserted(result: Result<u64, tokio_postgres::Error>) -> Result<u64, StoreError> {
    match result {
        Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            Err(StoreError::AlreadyExists)
        }
        other => other.map_err(pg_error),
    }
}

/// How a transaction's commit waits for the WAL flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// On disk before the commit returns: every change that is acknowledged.
    Durable,
    /// Not waiting for the flush (`synchronous_commit = off`): only for a
    /// change a crash may take back without breaking a promise, a lease.
    /// Later synchronous commits flush the log through it.
    Relaxed,
}

/// A transaction that can end either way: the pool's and a plain client's.
pub(crate) trait Ending: Sized {
    async fn commit(self) -> Result<(), tokio_postgres::Error>;
    async fn rollback(self) -> Result<(), tokio_postgres::Error>;
}

impl Ending for deadpool_postgres::Transaction<'_> {
    async fn commit(self) -> Result<(), tokio_postgres::Error> {
        deadpool_postgres::Transaction::commit(self).await
    }

    async fn rollback(self) -> Result<(), tokio_postgres::Error> {
        deadpool_postgres::Transaction::rollback(self).await
    }
}

impl Ending for tokio_postgres::Transaction<'_> {
    async fn commit(self) -> Result<(), tokio_postgres::Error> {
        tokio_postgres::Transaction::commit(self).await
    }

    async fn rollback(self) -> Result<(), tokio_postgres::Error> {
        tokio_postgres::Transaction::rollback(self).await
    }
}

/// Ends `tx` by `result`: commits when it is `Ok`, rolls back before
/// returning the error otherwise. A dropped transaction rolls back only
/// when its connection next gets to it, and until then holds its row
/// locks: a sweep (`SKIP LOCKED`) would pass the job over, a request would
/// wait. Every transaction Steadfast runs ends here.
pub(crate) async fn finish<Tx: Ending, T, E>(
    tx: Tx,
    result: Result<T, E>,
    error: fn(tokio_postgres::Error) -> E,
) -> Result<T, E> {
    match result {
        Ok(value) => {
            tx.commit().await.map_err(error)?;
            Ok(value)
        }
        Err(failure) => {
            // Should the rollback fail, the connection is broken and its
            // locks go with it; the caller needs the original error.
            let _ = tx.rollback().await;
            Err(failure)
        }
    }
}

impl PostgresStore {
    /// Opens a transaction on `client`, scoped to `tenant` when one is
    /// given (row-level security then sees only its rows), committing as
    /// `durability` says. End it with [`finish`].
    async fn begin<'c>(
        client: &'c mut deadpool_postgres::Object,
        tenant: Option<TenantId>,
        durability: Durability,
    ) -> Result<Transaction<'c>, StoreError> {
        let tx = client.transaction().await.map_err(pg_error)?;
        // Both settings are transaction-local, and go in one round trip.
        let relaxed = durability == Durability::Relaxed;
        let set = match tenant {
            None if !relaxed => return Ok(tx),
            None => tx
                .batch_execute("SET LOCAL synchronous_commit = off")
                .await
                .map_err(pg_error),
            Some(tenant) => {
                let setup = if relaxed {
                    "SELECT set_config('steadfast.tenant_id', $1, true), set_config('synchronous_commit', 'off', true)"
                } else {
                    "SELECT set_config('steadfast.tenant_id', $1, true)"
                };
                match statement(&tx, setup).await {
                    Ok(setup) => tx
                        .execute(&setup, &[&tenant.0.to_string()])
                        .await
                        .map(|_| ())
                        .map_err(pg_error),
                    Err(error) => Err(error),
                }
            }
        };
        match set {
            Ok(()) => Ok(tx),
            Err(error) => finish(tx, Err(error), pg_error).await,
        }
    }

    /// Runs `body` in one transaction on a pooled connection, scoped to
    /// `tenant` when one is given, and [`finish`]es it by `body`'s result.
    pub(crate) async fn transaction<T>(
        &self,
        tenant: Option<TenantId>,
        durability: Durability,
        body: impl AsyncFnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self.client().await?;
        let tx = Self::begin(&mut client, tenant, durability).await?;
        let result = body(&tx).await;
        finish(tx, result, pg_error).await
    }

    /// Runs one operation in three phases, in one transaction: `decide`
    /// loads the rows it needs and calls the shared decision
    /// (`steadfast_store::decide`); the decision's writes are persisted;
    /// after the commit, other nodes hear of queues that gained ready jobs.
    /// With a scope the transaction is the scope's tenant's and the audit
    /// records name its caller; without one it is the system's, across
    /// tenants.
    pub(crate) async fn decided<T>(
        &self,
        scope: Option<&TenantScope>,
        durability: Durability,
        now: Timestamp,
        decide: impl AsyncFnOnce(&Transaction<'_>) -> Result<Decision<T>, StoreError>,
    ) -> Result<T, StoreError> {
        let tenant = scope.map(TenantScope::tenant_id);
        let author = scope.map_or_else(Author::system, Author::of);
        let mut client = self.client().await?;
        let tx = Self::begin(&mut client, tenant, durability).await?;
        let result = async {
            let Decision { answer, writes } = decide(&tx).await?;
            let ready = writes.ready_queues();
            persist::persist(&tx, tenant, writes, &author, now).await?;
            Ok((answer, ready))
        }
        .await;
        let (answer, ready) = finish(tx, result, pg_error).await?;
        self.announce(&ready);
        Ok(answer)
    }
}

/// The prepared statement for `sql` from the connection's cache: after its
/// first use on a connection, a statement costs one round trip, not two
/// (parse and describe, then bind and execute).
pub(crate) async fn statement(tx: &Transaction<'_>, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
    tx.prepare_cached(sql).await.map_err(pg_error)
}

/// Switches the transaction's tenant (the setting is transaction-local).
pub(crate) async fn set_tenant(tx: &Transaction<'_>, tenant: TenantId) -> Result<(), StoreError> {
    tx.execute(
        &statement(tx, "SELECT set_config('steadfast.tenant_id', $1, true)").await?,
        &[&tenant.0.to_string()],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Queues that gained ready jobs in committed transactions, waiting to be
/// announced to every node (at most one entry per queue).
#[derive(Default)]
struct Announcements {
    pending: Mutex<BTreeSet<(TenantId, QueueName)>>,
    added: tokio::sync::Notify,
}

impl PostgresStore {
    /// Announces, after its commit, that a transaction made jobs ready in
    /// `queues`. A `NOTIFY` inside each writing transaction would serialise
    /// their commits: PostgreSQL holds one lock on its notification queue
    /// from a notifying transaction's commit until the commit is on disk.
    pub(crate) fn announce(&self, queues: &[(TenantId, QueueName)]) {
        if queues.is_empty() {
            return;
        }
        self.announcements
            .pending
            .lock()
            .expect("the announcement set is never poisoned")
            .extend(queues.iter().cloned());
        self.announcements.added.notify_one();
    }
}

/// Sends the pending announcements as `NOTIFY steadfast_ready`, all that
/// gathered since the last send in one statement, until the store is dropped.
/// A lost announcement (a crash between commit and send) only delays other
/// nodes' long-pollers until their poll ends.
async fn announce_ready(pool: Pool, announcements: Weak<Announcements>) {
    loop {
        let Some(announcements) = announcements.upgrade() else {
            return;
        };
        // Wake now and then to notice the store is gone.
        let _ = tokio::time::timeout(Duration::from_secs(1), announcements.added.notified()).await;
        let queues = std::mem::take(
            &mut *announcements
                .pending
                .lock()
                .expect("the announcement set is never poisoned"),
        );
        if queues.is_empty() {
            continue;
        }
        let payloads: Vec<String> = queues
            .iter()
            .map(|(tenant, queue)| format!("{} {}", tenant.0, queue))
            .collect();
        let sent = match pool.get().await {
            Ok(client) => client
                .execute(
                    "SELECT pg_notify('steadfast_ready', p) FROM unnest($1::text[]) AS p",
                    &[&payloads],
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = sent {
            // Keep them for the next try, after a pause.
            announcements
                .pending
                .lock()
                .expect("the announcement set is never poisoned")
                .extend(queues);
            drop(announcements);
            tracing::warn!(%error, "announcing ready queues to other nodes failed; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests;
