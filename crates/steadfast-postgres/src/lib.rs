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
mod bulk;
mod dashboard;
mod flow;
mod inbox;
mod jobs;
mod keys;
mod limits;
mod listen;
mod maintenance;
mod outbox;
mod persist;
mod producers;
mod rows;
mod schedules;
pub mod schema;
mod schemas;
mod slos;
mod tenants;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod tls;
mod workflows;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use steadfast_core::{QueueName, TenantId, Timestamp};
use steadfast_store::decide::{Author, Decision};
use steadfast_store::{ReadyCallback, StoreError, TenantScope};

pub use schema::SchemaError;

/// How one node uses its database: the sizes and timeouts an operator may
/// tune (`serve --database-pool-size`, `--database-connect-timeout-secs`,
/// `--database-statement-timeout-ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Connections in this node's pool (default 16).
    pub pool_size: usize,
    /// Longest wait to open a connection, or for a free pooled one (default 5 s).
    pub connect_timeout: Duration,
    /// Longest any statement may run before the server cancels it (default 10 s).
    pub statement_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
        }
    }
}

/// The driver of one connection, over TLS or not.
pub type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <tls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream,
>;

/// Where a node's connections go and how: the parsed URL and its TLS.
#[derive(Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: tls::MakeRustlsConnect,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Opens one connection outside the pool; its driver runs in its own task.
    pub async fn connect(&self) -> Result<(tokio_postgres::Client, Connection), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }
}

/// One connection to `url` as given (its `sslmode` honoured), for
/// administration such as migrations; its driver runs in its own task.
pub async fn connect_once(url: &str) -> Result<tokio_postgres::Client, ConnectError> {
    let (url, settings) = tls::split(url).map_err(ConnectError::Tls)?;
    let mut config: tokio_postgres::Config = url.parse().map_err(ConnectError::Url)?;
    config.ssl_mode(settings.ssl_mode());
    let tls = settings.connector().map_err(ConnectError::Tls)?;
    let (client, connection) = config
        .connect(tls)
        .await
        .map_err(|error| ConnectError::Connect(with_causes(&error)))?;
    tokio::spawn(connection);
    Ok(client)
}

/// The PostgreSQL store. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    target: Target,
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
    #[error("database TLS settings: {0}")]
    Tls(String),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// Parses a `postgres://` URL (its `sslmode` as libpq reads it, see
/// [`tls`]) and sets what every Steadfast connection uses.
pub fn target(url: &str, options: &PoolOptions) -> Result<Target, ConnectError> {
    let (url, settings) = tls::split(url).map_err(ConnectError::Tls)?;
    let mut config: tokio_postgres::Config = url.parse().map_err(ConnectError::Url)?;
    config.ssl_mode(settings.ssl_mode());
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
        "-c search_path={} -c statement_timeout={} -c lock_timeout=5000 -c plan_cache_mode=force_generic_plan \
         -c idle_in_transaction_session_timeout=10000 -c default_transaction_isolation=read\\ committed",
        schema::SCHEMA,
        options.statement_timeout.as_millis()
    ));
    config.connect_timeout(options.connect_timeout);
    config.application_name("steadfast");
    let tls = settings.connector().map_err(ConnectError::Tls)?;
    Ok(Target { config, tls })
}

impl PostgresStore {
    /// Connects as the application role and checks the role and the
    /// schema, with the default [`PoolOptions`].
    pub async fn connect(url: &str) -> Result<PostgresStore, ConnectError> {
        PostgresStore::connect_with(url, PoolOptions::default()).await
    }

    /// Connects as the application role, with a pool as `options` say, and
    /// checks the role and the schema.
    pub async fn connect_with(url: &str, options: PoolOptions) -> Result<PostgresStore, ConnectError> {
        let target = target(url, &options)?;
        let manager = Manager::from_config(
            target.config.clone(),
            target.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let timeouts = Timeouts {
            wait: Some(options.connect_timeout),
            create: Some(options.connect_timeout),
            recycle: Some(options.connect_timeout),
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .timeouts(timeouts)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| ConnectError::Connect(e.to_string()))?;
        let client = pool.get().await.map_err(|e| ConnectError::Connect(with_causes(&e)))?;
        schema::check(&client).await?;
        let announcements = Arc::new(Announcements::default());
        tokio::spawn(announce_ready(target.clone(), Arc::downgrade(&announcements)));
        Ok(PostgresStore {
            pool,
            target,
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

/// `error` and what caused it, down the chain: a failed TLS handshake says
/// why only in its source (an unknown issuer, a name mismatch).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let more = error.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = error.source();
    }
    text
}

/// PostgreSQL errors are never the client's fault; the detail goes to logs.
pub(crate) fn pg_error(error: tokio_postgres::Error) -> StoreError {
    if error.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL) {
        return StoreError::StorageFull;
    }
    StoreError::Unavailable(match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => error.to_string(),
    })
}

/// Whether PostgreSQL refused a statement only because an earlier one in
/// its transaction had failed (25P02): that earlier error is the cause.
pub(crate) fn after_failure(error: &StoreError) -> bool {
    // `pg_error` puts the SQLSTATE first.
    let refused = format!("{}:", tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION.code());
    matches!(error, StoreError::Unavailable(detail) if detail.starts_with(&refused))
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

/// A transaction on a pooled connection. tokio-postgres's own waits for
/// `BEGIN` before anything else is sent; this one is opened together with
/// its settings, in one round trip ([`PostgresStore::begin`]). Its queries
/// are the connection's (`Deref`), and it ends in [`finish`].
pub(crate) struct Transaction {
    /// `None` once ended.
    client: Option<deadpool_postgres::Object>,
}

impl std::ops::Deref for Transaction {
    type Target = deadpool_postgres::ClientWrapper;

    fn deref(&self) -> &Self::Target {
        self.client.as_ref().expect("a transaction is used only until it ends")
    }
}

impl Transaction {
    /// Sends `COMMIT` or `ROLLBACK`. A connection whose transaction did not
    /// end cleanly is not returned to the pool.
    async fn end(mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.batch_execute(sql).await?;
        // Answered: the connection is outside any transaction again. (On an
        // error, or if this is cancelled first, `Drop` closes it.)
        drop(self.client.take());
        Ok(())
    }

    /// A transaction on `client` that is not open yet: the caller sends
    /// the opening message ([`PostgresStore::opening`]) first.
    fn unopened(client: deadpool_postgres::Object) -> Transaction {
        Transaction { client: Some(client) }
    }
}

impl Drop for Transaction {
    /// Dropped before it ended (a request cancelled mid-transaction): the
    /// connection may still be inside it, holding row locks. Closing the
    /// connection makes the server roll back now, and the pool never hands
    /// it out again.
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

impl Ending for Transaction {
    async fn commit(self) -> Result<(), tokio_postgres::Error> {
        self.end("COMMIT").await
    }

    async fn rollback(self) -> Result<(), tokio_postgres::Error> {
        self.end("ROLLBACK").await
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
/// returning the error otherwise. Every transaction Steadfast runs ends
/// here, so none is left open holding row locks that a sweep (`SKIP
/// LOCKED`) would pass over or a request would wait on.
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
    /// The message that opens a transaction scoped to `tenant` when one is
    /// given (row-level security then sees only its rows), committing as
    /// `durability` says: `BEGIN` and both settings in one message, one
    /// round trip. The settings are transaction-local, so a pooled
    /// connection never carries a tenant into the next transaction.
    fn opening(tenant: Option<TenantId>, durability: Durability) -> String {
        let mut open = String::from("BEGIN");
        if let Some(tenant) = tenant {
            // A UUID's text is hex digits and dashes: safe as a literal.
            open.push_str(&format!(
                "; SELECT set_config('steadfast.tenant_id', '{}', true)",
                tenant.0.hyphenated()
            ));
        }
        if durability == Durability::Relaxed {
            open.push_str("; SET LOCAL synchronous_commit = off");
        }
        open
    }

    /// Opens a transaction on `client` (see [`Self::opening`]). End it
    /// with [`finish`].
    async fn begin(
        client: deadpool_postgres::Object,
        tenant: Option<TenantId>,
        durability: Durability,
    ) -> Result<Transaction, StoreError> {
        let tx = Transaction::unopened(client);
        // On failure the dropped transaction closes its connection.
        tx.batch_execute(&Self::opening(tenant, durability))
            .await
            .map_err(pg_error)?;
        Ok(tx)
    }

    /// Runs `body` in one transaction on a pooled connection, scoped to
    /// `tenant` when one is given, and [`finish`]es it by `body`'s result.
    pub(crate) async fn transaction<T>(
        &self,
        tenant: Option<TenantId>,
        durability: Durability,
        body: impl AsyncFnOnce(&Transaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = Self::begin(self.client().await?, tenant, durability).await?;
        let result = body(&tx).await;
        finish(tx, result, pg_error).await
    }

    /// Runs one operation in three phases, in one transaction: `decide`
    /// loads the rows it needs and calls the shared decision
    /// (`steadfast_store::decide`); the decision's writes are persisted;
    /// after the commit, this node's waiters and then other nodes hear of
    /// queues that gained ready jobs.
    /// With a scope the transaction is the scope's tenant's and the audit
    /// records name its caller; without one it is the system's, across
    /// tenants.
    pub(crate) async fn decided<T>(
        &self,
        scope: Option<&TenantScope>,
        durability: Durability,
        now: Timestamp,
        decide: impl AsyncFnOnce(&Transaction) -> Result<Decision<T>, StoreError>,
    ) -> Result<T, StoreError> {
        let tenant = scope.map(TenantScope::tenant_id);
        let author = scope.map_or_else(Author::system, Author::of);
        let tx = Transaction::unopened(self.client().await?);
        let result = async {
            // The decision's first read is sent right behind the opening
            // message, in the same flight: a round trip less. `join!` polls
            // the opening first, and tokio-postgres queues a request on its
            // first poll, so `BEGIN` always reaches the server first. The
            // decision only reads and locks: nothing is written before the
            // opening has been answered.
            let opening = Self::opening(tenant, durability);
            let (opened, decided) = futures::join!(tx.batch_execute(&opening), decide(&tx));
            opened.map_err(pg_error)?;
            let Decision { answer, writes } = decided?;
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
pub(crate) async fn statement(tx: &Transaction, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
    tx.prepare_cached(sql).await.map_err(pg_error)
}

/// Switches the transaction's tenant (the setting is transaction-local).
pub(crate) async fn set_tenant(tx: &Transaction, tenant: TenantId) -> Result<(), StoreError> {
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
    /// The backend process of the announcing connection, 0 while there is
    /// none: this node's listener skips what it announced itself, since
    /// `local` heard it at commit.
    announcer_pid: AtomicI32,
    /// Who hears of this node's own commits at once ([`Maintenance::subscribe_ready`]).
    ///
    /// [`Maintenance::subscribe_ready`]: steadfast_store::Maintenance::subscribe_ready
    local: Mutex<Vec<ReadyCallback>>,
}

impl Announcements {
    fn take(&self) -> BTreeSet<(TenantId, QueueName)> {
        std::mem::take(&mut *self.pending.lock().expect("the announcement set is never poisoned"))
    }

    /// Queues to announce at the next send (again, after a failed one).
    fn add(&self, queues: impl IntoIterator<Item = (TenantId, QueueName)>) {
        self.pending
            .lock()
            .expect("the announcement set is never poisoned")
            .extend(queues);
    }

    /// Whether a notification came from this node's own announcer.
    pub(crate) fn is_own(&self, process_id: i32) -> bool {
        self.announcer_pid.load(Ordering::Relaxed) == process_id
    }
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
        // This node's waiters first, at once; other nodes through NOTIFY.
        let local = self
            .announcements
            .local
            .lock()
            .expect("the subscriber list is never poisoned");
        for on_ready in local.iter() {
            for (tenant, queue) in queues {
                on_ready(*tenant, queue.clone());
            }
        }
        drop(local);
        self.announcements.add(queues.iter().cloned());
        self.announcements.added.notify_one();
    }
}

/// Sends the pending announcements as `NOTIFY steadfast_ready`, all that
/// gathered since the last send in one statement, until the store is
/// dropped. One dedicated connection, with `synchronous_commit` off: a
/// notification is delivered at commit, and waiting for its flush would only
/// hold up the commits of real work behind it. A lost announcement (a crash
/// between commit and send) only delays other nodes' long-pollers until
/// their poll ends.
async fn announce_ready(target: Target, announcements: Weak<Announcements>) {
    let mut connection: Option<(tokio_postgres::Client, tokio_postgres::Statement)> = None;
    loop {
        let Some(announcements) = announcements.upgrade() else {
            return;
        };
        // Wake now and then to notice the store is gone.
        let _ = tokio::time::timeout(Duration::from_secs(1), announcements.added.notified()).await;
        let queues = announcements.take();
        if queues.is_empty() {
            continue;
        }
        let payloads: Vec<String> = queues
            .iter()
            .map(|(tenant, queue)| format!("{} {}", tenant.0, queue))
            .collect();
        let sent = async {
            let (client, notify) = match connection.take() {
                Some((client, notify)) if !client.is_closed() => (client, notify),
                _ => connect_announcer(&target, &announcements).await?,
            };
            client.execute(&notify, &[&payloads]).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((client, notify))
        }
        .await;
        match sent {
            Ok(announcer) => connection = Some(announcer),
            Err(error) => {
                // Keep them for the next try, after a pause.
                announcements.add(queues);
                drop(announcements);
                tracing::warn!(%error, "announcing ready queues to other nodes failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Opens the announcing connection, notes its backend process for as long
/// as the connection lives (a later connection, this node's or another's,
/// may get the same PID), and prepares the one statement it sends.
async fn connect_announcer(
    target: &Target,
    announcements: &Arc<Announcements>,
) -> Result<(tokio_postgres::Client, tokio_postgres::Statement), String> {
    announcements.announcer_pid.store(0, Ordering::Relaxed);
    let mut target = target.clone();
    let options = format!(
        "{} -c synchronous_commit=off",
        target.config.get_options().unwrap_or_default()
    );
    target.config.options(&options);
    let (client, connection) = target.connect().await.map_err(|e| e.to_string())?;
    // The connection runs in its own task; once it ends, its PID is
    // forgotten (unless a newer connection's has replaced it).
    let (known, pid_known) = tokio::sync::oneshot::channel::<i32>();
    let slot = Arc::downgrade(announcements);
    tokio::spawn(async move {
        let _ = connection.await;
        if let (Ok(pid), Some(announcements)) = (pid_known.await, slot.upgrade()) {
            let _ = announcements
                .announcer_pid
                .compare_exchange(pid, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    });
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    let notify = client
        .prepare("SELECT pg_notify('steadfast_ready', p) FROM unnest($1::text[]) AS p")
        .await
        .map_err(|e| e.to_string())?;
    announcements.announcer_pid.store(pid, Ordering::Relaxed);
    let _ = known.send(pid);
    Ok((client, notify))
}

#[cfg(test)]
mod tests;
