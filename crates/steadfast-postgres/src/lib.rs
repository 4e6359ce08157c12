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
use steadfast_core::{QueueName, TenantId};
use steadfast_store::StoreError;
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

/// Starts a transaction scoped to `tenant`: row-level security sees only its rows.
pub(crate) async fn scoped(
    client: &mut deadpool_postgres::Object,
    tenant: TenantId,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    set_tenant(&tx, tenant).await?;
    Ok(tx)
}

/// Commits `tx` when `result` is a success; otherwise rolls it back before
/// the error is returned. A dropped transaction rolls back only when its
/// connection next gets to it, and until then it holds its row locks: a
/// sweep (`SKIP LOCKED`) would pass the job over, a request would wait.
pub(crate) async fn settle<T>(tx: Transaction<'_>, result: Result<T, StoreError>) -> Result<T, StoreError> {
    match result {
        Ok(value) => {
            tx.commit().await.map_err(pg_error)?;
            Ok(value)
        }
        Err(error) => {
            // Should the rollback fail, the connection is broken and its
            // locks go with it; the caller needs the original error.
            let _ = tx.rollback().await;
            Err(error)
        }
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
