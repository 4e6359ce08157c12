//! `steadfast serve`: own the data dir, open storage, bootstrap the first
//! admin key, serve HTTP, and shut down gracefully.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use steadfast_core::{Limits, RetryPolicy, Role, TenantId, TenantName};
use steadfast_postgres::{ConnectError, PostgresStore};
use steadfast_protocol::tls::TrustedRoots;
use steadfast_server::engine::audit::AuditSigner;
use steadfast_server::engine::sessions::DashboardLimits;
use steadfast_server::engine::{AbuseLimits, DeliveryLimits, InboxLimits, Rate, TenantDefaults};
use steadfast_server::serve::{ConnectionLimits, ServeOptions};
use steadfast_server::{Clock, Engine, EngineConfig, SystemClock, SystemRandom};
use steadfast_sqlite::SqliteStore;
use steadfast_store::decide::KeyChange;
use steadfast_store::{Retention, Store, StoreError, WorkflowLimits, auth};
use tokio::net::TcpListener;

use crate::admin::generate_key;
use crate::cli::ServeArgs;

pub const DATABASE_FILE: &str = "steadfast.db";
const LOCK_FILE: &str = "steadfast.lock";
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// An error that should exit with a particular code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl ServeArgs {
    fn engine_config(&self, audit_signer: AuditSigner, outbound_roots: TrustedRoots) -> EngineConfig {
        let limits = Limits {
            max_body_bytes: self.max_body_bytes,
            max_batch_jobs: self.max_batch_jobs,
            dedup_window: Duration::from_secs(self.dedup_window_secs),
            lease_ttl: Duration::from_secs(self.lease_ttl_secs),
            default_max_attempts: self.default_max_attempts,
            default_timeout: Duration::from_secs(self.default_timeout_secs),
            ..Limits::default()
        };
        let retry = RetryPolicy {
            base: Duration::from_millis(self.retry_base_ms),
            cap: Duration::from_secs(self.retry_cap_secs),
        };
        EngineConfig {
            limits,
            retry,
            workflow: WorkflowLimits::default(),
            audit_signer: Some(audit_signer),
            audit_retention: Duration::from_secs(self.audit_retention_days.saturating_mul(24 * 3600)),
            audit_checkpoint_every: Duration::from_secs(self.audit_checkpoint_interval_secs),
            metrics_public: self.metrics_public,
            record_metrics: true,
            delivery: DeliveryLimits {
                concurrency: self.notify_concurrency,
                per_tenant: self.notify_per_tenant,
                timeout: Duration::from_secs(self.notify_timeout_secs),
            },
            outbound_roots: Some(outbound_roots),
            abuse: AbuseLimits {
                key_rate: Rate::new(self.key_rate_limit, self.key_rate_burst).expect("validated"),
                auth_failure_rate: Rate::new(self.auth_failure_rate_limit, self.auth_failure_burst).expect("validated"),
                auth_failure_record_every: Duration::from_secs(self.auth_failure_record_secs),
            },
            tenants: TenantDefaults {
                retention: Retention {
                    succeeded: self.retain_succeeded,
                    failed: self.retain_failed,
                },
                max_unfinished_jobs: self.max_unfinished_jobs,
            },
            random: Arc::new(SystemRandom),
            inbox: InboxLimits {
                max_body_bytes: self.max_hook_body_bytes,
                source_rate: Rate::new(self.hook_rate_limit, self.hook_rate_burst).expect("validated"),
                max_in_flight: self.max_hook_in_flight,
                ..InboxLimits::default()
            },
            bulk_batch: self.bulk_batch,
            ui_origin: self.ui_origin.clone(),
            dashboard: DashboardLimits {
                idle: Duration::from_secs(self.ui_session_idle_secs),
                lifetime: Duration::from_secs(self.ui_session_lifetime_secs),
                max_sessions: self.ui_max_sessions as usize,
                query_time_limit: Duration::from_millis(self.ui_query_timeout_ms),
                refresh_every: Duration::from_secs(self.ui_refresh_secs.max(2)),
            },
        }
    }

    /// How `serve` listens: TLS from the certificate files, if given, and
    /// the connection bounds.
    fn serve_options(&self) -> Result<ServeOptions, Exit> {
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(steadfast_server::serve::tls_config(cert, key).map_err(|error| Exit {
                code: 78,
                message: error.to_string(),
            })?),
            _ => None,
        };
        Ok(ServeOptions {
            tls,
            limits: ConnectionLimits {
                max_connections: self.max_connections,
                header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
                body_read_timeout: Duration::from_secs(self.body_read_timeout_secs),
            },
        })
    }

    fn validate(&self) -> Result<(), Exit> {
        let defaults = Limits::default();
        let problems = [
            (self.max_body_bytes == 0, "--max-body-bytes must be positive"),
            (
                self.max_hook_body_bytes == 0 || self.max_hook_body_bytes > 64 * 1024 * 1024,
                "--max-hook-body-bytes must be between 1 and 67108864",
            ),
            (
                self.hook_rate_limit == 0 || self.hook_rate_burst == 0,
                "--hook-rate-limit and --hook-rate-burst must be positive",
            ),
            (
                self.max_hook_in_flight == 0 || self.max_hook_in_flight > 100_000,
                "--max-hook-in-flight must be between 1 and 100000",
            ),
            (self.max_batch_jobs == 0, "--max-batch-jobs must be positive"),
            (self.lease_ttl_secs == 0, "--lease-ttl-secs must be positive"),
            (
                self.notify_concurrency == 0 || self.notify_concurrency > 1000,
                "--notify-concurrency must be between 1 and 1000",
            ),
            (
                self.notify_per_tenant == 0 || self.notify_per_tenant > self.notify_concurrency,
                "--notify-per-tenant must be between 1 and --notify-concurrency",
            ),
            (
                self.notify_timeout_secs == 0 || self.notify_timeout_secs > 300,
                "--notify-timeout-secs must be between 1 and 300",
            ),
            (
                self.default_max_attempts == 0 || self.default_max_attempts > defaults.max_attempts,
                "--default-max-attempts must be between 1 and 1000",
            ),
            (
                self.default_timeout_secs == 0 || self.default_timeout_secs > defaults.max_timeout.as_secs(),
                "--default-timeout-secs must be between 1 and 86400",
            ),
            (self.retry_base_ms == 0, "--retry-base-ms must be positive"),
            (
                self.max_connections == 0 || self.max_connections > 1_000_000,
                "--max-connections must be between 1 and 1000000",
            ),
            (
                self.header_read_timeout_secs == 0 || self.header_read_timeout_secs > 300,
                "--header-read-timeout-secs must be between 1 and 300",
            ),
            (
                self.body_read_timeout_secs == 0 || self.body_read_timeout_secs > 3600,
                "--body-read-timeout-secs must be between 1 and 3600",
            ),
            (
                self.key_rate_limit == 0 || self.key_rate_burst == 0,
                "--key-rate-limit and --key-rate-burst must be positive",
            ),
            (
                self.auth_failure_rate_limit == 0 || self.auth_failure_burst == 0,
                "--auth-failure-rate-limit and --auth-failure-burst must be positive",
            ),
            (
                self.retain_succeeded < Duration::from_secs(60) || self.retain_failed < Duration::from_secs(60),
                "--retain-succeeded and --retain-failed must be at least 1m",
            ),
            (self.max_unfinished_jobs == 0, "--max-unfinished-jobs must be positive"),
            (
                self.auth_failure_record_secs == 0 || self.auth_failure_record_secs > 3600,
                "--auth-failure-record-secs must be between 1 and 3600",
            ),
            (
                self.audit_retention_days == 0,
                "--audit-retention-days must be positive",
            ),
            (
                self.audit_checkpoint_interval_secs == 0,
                "--audit-checkpoint-interval-secs must be positive",
            ),
        ];
        let problem = match problems.iter().find(|(bad, _)| *bad) {
            Some((_, message)) => Some((*message).to_owned()),
            None => self.data.pool_options().err(),
        };
        match problem {
            Some(message) => Err(Exit { code: 78, message }),
            None => Ok(()),
        }
    }
}

/// Creates the data dir (private to its owner) if it does not exist.
fn create_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))
}

/// Creates the data dir if needed and takes its lock, which the OS releases
/// when the process exits, however it exits.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    create_data_dir(data_dir)?;
    let path = data_dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(Exit {
            code: 1,
            message: format!(
                "another steadfast server is already running on the data dir {} (it holds {}); \
                 stop it first, or give this one its own --data-dir",
                data_dir.display(),
                path.display()
            ),
        }
        .into()),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

pub fn open_store(data_dir: &Path) -> anyhow::Result<SqliteStore> {
    create_data_dir(data_dir)?;
    Ok(SqliteStore::open(&data_dir.join(DATABASE_FILE))?)
}

/// Writes `contents` to `path` with mode 0600, atomically and durably.
fn write_secret_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

async fn has_any_key(store: &dyn Store) -> anyhow::Result<bool> {
    for tenant in store.list_tenants().await? {
        if !store.list_keys(&auth::local_operator(&tenant)).await?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The audit signing key `serve` signs with: given by the operator (a file
/// or the environment), or, on embedded storage only, the data dir's own
/// file, created on first start. PostgreSQL nodes never invent one: each
/// would sign with its own.
async fn audit_signer(args: &ServeArgs, store: &dyn Store) -> anyhow::Result<AuditSigner> {
    let configuration = |message: String| Exit { code: 78, message };
    if let Some(hex) = &args.audit_signing_key {
        return AuditSigner::from_hex(hex).ok_or_else(|| {
            configuration("STEADFAST_AUDIT_SIGNING_KEY is not an audit signing key (64 hex digits)".into()).into()
        });
    }
    match (&args.audit_signing_key_file, &args.data.database_url) {
        (Some(path), Some(_)) => crate::audit::read_signer(path)?.ok_or_else(|| {
            configuration(format!(
                "{} does not exist; create the deployment's key once with `steadfast audit create-key {}` \
                 and give every node the same file",
                path.display(),
                path.display()
            ))
            .into()
        }),
        (None, Some(_)) => Err(configuration(
            "PostgreSQL nodes sign audit checkpoints with one shared key: give it with \
             --audit-signing-key-file FILE or STEADFAST_AUDIT_SIGNING_KEY \
             (create it once with `steadfast audit create-key FILE`)"
                .into(),
        )
        .into()),
        (path, None) => {
            let path = path
                .clone()
                .unwrap_or_else(|| args.data.data_dir.join(crate::audit::SIGNING_KEY_FILE));
            // A key is created on the first start only: once one is
            // registered, a missing file is a lost key, not a fresh start.
            if !path.exists() && !store.signing_keys().await?.is_empty() {
                return Err(configuration(format!(
                    "the audit signing key file {} is missing, but this store has a registered key; \
                     restore the file from its backup, or replace the key on purpose with \
                     `steadfast audit rotate-key --new-key-file {}`",
                    path.display(),
                    path.display()
                ))
                .into());
            }
            let (signer, created) = crate::audit::read_or_create_signer(&path)?;
            if created {
                tracing::info!(path = %path.display(), "created an audit signing key; back it up, and keep it out of the database");
            }
            Ok(signer)
        }
    }
}

/// Registers the signer's public key as the deployment's (the first start),
/// or checks that it is the one registered.
async fn register_signer(store: &dyn Store, signer: &AuditSigner) -> anyhow::Result<()> {
    let public_key = signer.public_key_hex();
    match store
        .register_signing_key(&public_key, KeyChange::Start, SystemClock.now())
        .await
    {
        Ok(Some(_)) => tracing::info!(%public_key, "registered this deployment's audit signing key"),
        Ok(None) => {}
        Err(StoreError::SigningKey(refused)) => {
            return Err(Exit {
                code: 78,
                message: refused.to_string(),
            }
            .into());
        }
        Err(error) => return Err(error.into()),
    }
    tracing::info!(%public_key, "audit checkpoints are signed with this key");
    Ok(())
}

/// On a store without any key, creates tenant `default` (if missing) and an
/// admin key, saves it to `admin.key` and prints it once.
async fn bootstrap(store: &dyn Store, data_dir: &Path, base_url: &str) -> anyhow::Result<()> {
    if has_any_key(store).await? {
        return Ok(());
    }
    let name = TenantName::new("default").expect("valid");
    let tenant = match store.tenant_by_name(&name).await? {
        Some(tenant) => tenant,
        None => {
            store
                .create_tenant(TenantId(uuid::Uuid::now_v7()), &name, SystemClock.now())
                .await?
        }
    };
    let (secret, key) = generate_key(Role::Admin, "bootstrap admin");
    let path = data_dir.join(ADMIN_KEY_FILE);
    // The file first: if we crash before the key is stored, the next start
    // finds no key and writes a fresh one over it.
    write_secret_file(&path, &format!("{}\n", secret.reveal()))?;
    store
        .create_key(&auth::local_operator(&tenant), key, SystemClock.now())
        .await?;
    eprintln!(
        "\nCreated tenant `default` and its first admin key (shown once; also saved to {}):\n\n    {}\n\n\
         Try:  curl -H \"Authorization: Bearer $(cat {})\" {base_url}/v1/jobs\n",
        path.display(),
        secret.reveal(),
        path.display()
    );
    Ok(())
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    args.validate()?;
    let serve_options = args.serve_options()?;
    let outbound_roots = TrustedRoots::system().map_err(|error| Exit {
        code: 78,
        message: error.to_string(),
    })?;
    let data_dir: PathBuf = args.data.data_dir.clone();
    // Embedded storage belongs to one server (the lock lives as long as the
    // process); PostgreSQL is shared by any number of nodes.
    let (store, _lock): (Arc<dyn Store>, Option<File>) = match &args.data.database_url {
        Some(url) => {
            let store = PostgresStore::connect_with(url, args.data.pool_options().map_err(anyhow::Error::msg)?)
                .await
                .map_err(|error| match error {
                    ConnectError::Schema(_) | ConnectError::Url(_) | ConnectError::Tls(_) => Exit {
                        code: 78,
                        message: error.to_string(),
                    }
                    .into(),
                    other => anyhow::Error::from(other),
                })?;
            (Arc::new(store), None)
        }
        None => {
            let lock = lock_data_dir(&data_dir)?;
            (Arc::new(open_store(&data_dir)?), Some(lock))
        }
    };
    let signer = audit_signer(&args, store.as_ref()).await?;
    register_signer(store.as_ref(), &signer).await?;
    let listener = TcpListener::bind(args.listen).await.map_err(|error| Exit {
        code: 1,
        message: format!("cannot listen on {}: {error}", args.listen),
    })?;
    let address = listener.local_addr()?;
    let scheme = if serve_options.tls.is_some() { "https" } else { "http" };
    let storage = match &args.data.database_url {
        None => {
            bootstrap(store.as_ref(), &data_dir, &format!("{scheme}://{address}")).await?;
            format!("embedded, {}", data_dir.display())
        }
        Some(_) => {
            if !has_any_key(store.as_ref()).await? {
                tracing::warn!(
                    "no API keys yet: create a tenant and a key with `steadfast tenant create NAME --database-url URL` \
                     and `steadfast key create --tenant NAME --role admin --database-url URL`"
                );
            }
            "postgresql".to_owned()
        }
    };

    let engine = Engine::new(store, Arc::new(SystemClock), args.engine_config(signer, outbound_roots));
    tracing::info!(%address, scheme, storage, "steadfast is ready");

    let duties = tokio::spawn(engine.clone().run_duties());
    let shutdown = {
        let engine = engine.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("shutting down: no new leases; finishing in-flight requests (signal again to force)");
            engine.start_draining();
            tokio::spawn(async {
                wait_for_signal().await;
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            });
        }
    };
    let server = steadfast_server::serve::serve(
        listener,
        steadfast_server::router(engine.clone()),
        serve_options,
        shutdown,
    );
    let grace = Duration::from_secs(args.shutdown_timeout_secs);
    let mut server = std::pin::pin!(server);
    tokio::select! {
        () = &mut server => {}
        () = async { engine.draining().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish in time; exiting");
        }
    }
    duties.abort();
    // Failures counted since the last record would be lost with the process.
    if let Err(error) = engine.record_auth_failures().await {
        tracing::warn!(%error, "could not record the last failed authentications");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("can install a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Administrative commands work on an existing data dir only, so a typo in
/// `--data-dir` does not silently create an empty one.
pub fn ensure_dir_exists(data_dir: &Path) -> anyhow::Result<()> {
    if !data_dir.join(DATABASE_FILE).exists() {
        bail!(
            "no Steadfast database in {} (start `steadfast serve --data-dir {}` once, or pass --data-dir)",
            data_dir.display(),
            data_dir.display()
        );
    }
    Ok(())
}
