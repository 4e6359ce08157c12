//! Command-line flags. Every flag has an environment variable, and both show in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use steadfast_protocol as wire;

#[derive(Debug, Parser)]
#[command(
    name = "steadfast",
    version,
    about = "Durable background jobs and workflows: one binary, embedded storage, HTTP/JSON workers.",
    long_about = "Durable background jobs and workflows: one binary, embedded storage, HTTP/JSON workers.\n\n\
Start a server with `steadfast serve`. On first start it creates the tenant `default` and an admin key,\n\
printed once and saved to <data-dir>/admin.key. Then:\n\n\
  export STEADFAST_KEY=$(cat steadfast-data/admin.key)\n\
  steadfast enqueue --queue emails --payload '{\"to\":\"a@example.com\"}'\n\
  steadfast job list",
    after_help = "Exit codes: 0 ok, 1 runtime error, 2 usage error, 78 configuration error."
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = "STEADFAST_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server on embedded storage.
    #[command(after_help = "Example:\n  steadfast serve --data-dir /var/lib/steadfast --listen 0.0.0.0:8650")]
    Serve(Box<ServeArgs>),
    /// Manage tenants (works while a server runs on the same data dir).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage API keys (works while a server runs on the same data dir).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Enqueue a job.
    #[command(
        after_help = "Example:\n  steadfast enqueue --queue emails --payload '{\"to\":\"a@example.com\"}' --idempotency-key signup-42"
    )]
    Enqueue(EnqueueArgs),
    /// Inspect and act on jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// Measure throughput against a real server over HTTP.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Verify and export the tamper-evident audit log (straight from the storage).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Service level objectives and their burn-rate alerts.
    #[command(subcommand)]
    Slo(SloCommand),
    /// Webhook sources: where providers deliver, their secrets and events (docs/webhooks.md).
    #[command(subcommand)]
    Source(SourceCommand),
    /// Queues: their flow policies, live counts and held jobs (docs/flow-control.md).
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Resources: the downstreams jobs call, with their circuit breakers and limits (docs/flow-control.md).
    #[command(subcommand)]
    Resource(ResourceCommand),
    /// Schedules: jobs enqueued on a cron pattern, in a time zone (docs/schedules.md).
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Create or upgrade the PostgreSQL schema, as the owning role, and grant the application role.
    #[command(
        after_help = "Example:\n  steadfast migrate --database-url postgres://steadfast_owner@db/steadfast --app-role steadfast_app\n\n\
See docs/postgres.md for creating the two roles."
    )]
    Migrate(MigrateArgs),
    /// Runnable demonstrations, such as the claims-pipeline crash drill.
    #[command(subcommand)]
    Demo(DemoCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute every chain (or one tenant's) from the database; exit 0 when
    /// intact, otherwise name the first bad record and what is wrong.
    #[command(after_help = "Examples:\n  steadfast audit verify\n  \
curl -s -H \"Authorization: Bearer $KEY\" localhost:8650/v1/audit/head > checkpoint.json   # keep it safe\n  \
steadfast audit verify --tenant acme --checkpoint checkpoint.json")]
    Verify {
        /// Only this tenant (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// A checkpoint exactly as `GET /v1/audit/head` returned it: the log
        /// must still reach it, unchanged (catches a truncated tail).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Trust only this public key (hex, repeatable) for the checkpoint's
        /// signature, instead of the keys registered in the database: pins
        /// the key from outside, against someone who can write the database.
        #[arg(long = "public-key", requires = "checkpoint")]
        public_keys: Vec<String>,
        #[command(flatten)]
        data: StorageArgs,
    },
    /// Create a new audit signing key in FILE (mode 0600) and print its
    /// public key. Refuses to overwrite an existing file.
    #[command(after_help = "Example:\n  steadfast audit create-key /etc/steadfast/audit-signing.key")]
    CreateKey { file: PathBuf },
    /// Make the key in --new-key-file (created there if missing) the key every
    /// node signs checkpoints with. The previous key is retired: it signs
    /// nothing new but still verifies the checkpoints it signed. Restart the
    /// nodes with the new key afterwards.
    #[command(
        after_help = "Example:\n  steadfast audit rotate-key --new-key-file /etc/steadfast/audit-signing-2.key \
--database-url \"$STEADFAST_DATABASE_URL\""
    )]
    RotateKey {
        #[arg(long)]
        new_key_file: PathBuf,
        #[command(flatten)]
        data: StorageArgs,
    },
    /// List the audit signing keys this deployment has registered, oldest first.
    Keys {
        #[command(flatten)]
        data: StorageArgs,
    },
    /// Write records as JSON Lines, with their hashes, so an external archive can re-verify them.
    #[command(
        after_help = "Example:\n  steadfast audit export --tenant acme --since 2026-01-01T00:00:00Z > acme-2026.jsonl"
    )]
    Export {
        #[arg(long)]
        tenant: String,
        /// RFC 3339; records at or after.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339; records before.
        #[arg(long)]
        until: Option<String>,
        #[command(flatten)]
        data: StorageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SloCommand {
    /// Define an SLO for a queue (admin key).
    #[command(
        after_help = "Examples:\n  steadfast slo create --name payments-success --queue payments --objective 0.999\n  \
steadfast slo create --name emails-fast --queue emails --objective 0.99 --latency-ms 60000 --notify-url https://hooks.example/steadfast"
    )]
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        queue: String,
        /// Target share of good events, e.g. 0.99.
        #[arg(long)]
        objective: f64,
        /// Count a job as good only if it succeeded within this many ms of being enqueued.
        #[arg(long)]
        latency_ms: Option<u64>,
        /// Compliance window (default 28).
        #[arg(long)]
        window_days: Option<u32>,
        /// Where alert changes are POSTed.
        #[arg(long)]
        notify_url: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Every SLO with its budget remaining, burn rates and alerts (JSON).
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Create a webhook source (admin key); prints its id, ingest_path and,
    /// when Steadfast made it, its secret (shown only now).
    #[command(
        after_help = "Examples:\n  steadfast source create --name stripe-live --kind stripe --queue payments --secret whsec_...\n  \
steadfast source create --name gh --kind github --queue ci\n  \
steadfast source create --name acme --kind hmac --queue billing --secret s3cret-value \\\n    \
--config '{\"hmac\":{\"header\":\"X-Acme-Signature\",\"algorithm\":\"sha256\",\"encoding\":\"hex\"}}'"
    )]
    Create {
        #[arg(long)]
        name: String,
        /// stripe, github, standard, shopify, slack or hmac.
        #[arg(long)]
        kind: String,
        /// The queue its events become jobs in.
        #[arg(long)]
        queue: String,
        /// The signing secret (required for stripe, shopify and slack; made by Steadfast otherwise).
        #[arg(long, env = "STEADFAST_SOURCE_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// How far a signed timestamp may be from the server's clock (default 300).
        #[arg(long)]
        tolerance_secs: Option<u64>,
        /// How long an event is remembered for deduplication (default 35 days).
        #[arg(long)]
        dedup_window_secs: Option<u64>,
        /// The kind's settings as JSON: {"keep_headers": [..], "hmac": {..}}.
        #[arg(long)]
        config: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Every source of the tenant (JSON; secrets' values are never shown).
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add a secret to a source (admin key); with --grace, the other secrets
    /// stop being accepted that long from now, so the provider can switch.
    #[command(after_help = "Examples:\n  steadfast source rotate src_5f3c... --grace 24h\n  \
steadfast source rotate src_5f3c... --secret whsec_new... --grace 1h")]
    Rotate {
        id: String,
        /// The new secret (required for stripe, shopify and slack); made by Steadfast otherwise.
        #[arg(long, env = "STEADFAST_SOURCE_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// How long the other secrets stay valid (e.g. 24h); without it they stay until they expire.
        #[arg(long, value_parser = parse_duration)]
        grace: Option<Duration>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A source's events, newest first, one JSON object per line.
    Events {
        id: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make a new job from a stored event (admin key), linked to it and audited.
    #[command(after_help = "Example:\n  steadfast source replay src_5f3c... evt_1NG8Du2eZvKYlo2CUI79vXWy")]
    Replay {
        id: String,
        event_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Every queue with its policy, unfinished jobs, busiest keys and held jobs (JSON).
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop granting leases of the queue, on every node, until resumed (admin key).
    Pause {
        queue: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Grant leases of a paused queue again (admin key).
    Resume {
        queue: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the queue's flow policy, or change the rules given (admin key);
    /// rules not named stay as they are.
    #[command(after_help = "Examples:\n  steadfast queue policy payments\n  \
steadfast queue policy payments --concurrency 20 --key-concurrency 2 --rate 100/1s\n  \
steadfast queue policy enrich --fairness flow_key --weight enterprise=4 --retry-budget 0.1:1\n  \
steadfast queue policy payments --clear rate --clear key_concurrency\n  \
steadfast queue policy payments --patch '{\"key_rate\":{\"limit\":5,\"period_ms\":1000,\"burst\":10}}'")]
    Policy {
        queue: String,
        /// Running jobs of the queue.
        #[arg(long)]
        concurrency: Option<u32>,
        /// Running jobs per flow_key.
        #[arg(long)]
        key_concurrency: Option<u32>,
        /// Lease grants of the queue: LIMIT/PERIOD[:BURST], e.g. 100/1s or 10/1m:20.
        #[arg(long, value_parser = parse_rate)]
        rate: Option<wire::Rate>,
        /// Lease grants per flow_key, as --rate.
        #[arg(long, value_parser = parse_rate)]
        key_rate: Option<wire::Rate>,
        /// flow_key: keys take turns.
        #[arg(long)]
        fairness: Option<String>,
        /// A key's fairness weight, KEY=N (repeat; replaces every weight).
        #[arg(long = "weight")]
        weights: Vec<String>,
        /// RATIO[:MIN_PER_SEC]: retries at most RATIO x first attempts.
        #[arg(long, value_parser = parse_budget)]
        retry_budget: Option<wire::RetryBudget>,
        /// Remove a rule: concurrency, key_concurrency, rate, key_rate, fairness, weights or retry_budget (repeat).
        #[arg(long)]
        clear: Vec<String>,
        /// A JSON merge patch, as `PUT /v1/queues/{queue}/policy` takes it; the flags above apply on top.
        #[arg(long)]
        patch: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ResourceCommand {
    /// Create a resource or replace its configuration (admin key); its breaker state is kept.
    #[command(
        after_help = "Examples:\n  steadfast resource set stripe --breaker 0.5,20,60,30,2 --concurrency 50 --rate 100/1s\n  \
steadfast resource set geocoder --concurrency 4"
    )]
    Set {
        name: String,
        /// FAILURE_RATIO,MIN_REQUESTS,WINDOW_SECS,OPEN_SECS,HALF_OPEN_PROBES
        #[arg(long, value_parser = parse_breaker)]
        breaker: Option<wire::BreakerConfig>,
        /// Running jobs of the resource, over all queues.
        #[arg(long)]
        concurrency: Option<u32>,
        /// Lease grants of its jobs: LIMIT/PERIOD[:BURST].
        #[arg(long, value_parser = parse_rate)]
        rate: Option<wire::Rate>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The resource and its breaker's state now (JSON).
    Get {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Every resource (JSON).
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a resource (admin key): its jobs are no longer held.
    Delete {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule or replace it (admin key); prints it with its next 5 fire times.
    #[command(
        after_help = "Examples:\n  steadfast schedule set nightly-report --cron '0 2 * * *' --timezone Europe/Berlin \\\n    --queue reports --payload '{\"kind\":\"nightly\"}'\n  steadfast schedule set heartbeat --cron '*/15 * * * * *' --queue pings --overlap allow"
    )]
    Set {
        name: String,
        /// 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first.
        #[arg(long)]
        cron: String,
        /// An IANA time zone, e.g. Europe/Berlin.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        #[arg(long)]
        queue: String,
        /// Each tick's job's payload (JSON).
        #[arg(long, default_value = "null")]
        payload: String,
        /// skip (no tick while the last tick's job is unfinished) or allow.
        #[arg(long, default_value = "skip")]
        overlap: String,
        /// none (missed ticks are skipped) or latest (the latest missed tick fires once).
        #[arg(long, default_value = "none")]
        catch_up: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The schedule, its next 5 fire times and its last tick (JSON).
    Get {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Every schedule (JSON).
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop firing until resumed (admin key).
    Pause {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Fire again from the first tick after now (admin key).
    Resume {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove the schedule (admin key); the jobs it made stay.
    Delete {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `LIMIT/PERIOD[:BURST]`, e.g. `100/1s`, `10/1m:20`.
pub fn parse_rate(text: &str) -> Result<wire::Rate, String> {
    let usage = || format!("{text:?} is not a rate like 100/1s or 10/1m:20 (LIMIT/PERIOD[:BURST])");
    let (limit, rest) = text.split_once('/').ok_or_else(usage)?;
    let (period, burst) = match rest.split_once(':') {
        Some((period, burst)) => (period, Some(burst.parse().map_err(|_| usage())?)),
        None => (rest, None),
    };
    Ok(wire::Rate {
        limit: limit.parse().map_err(|_| usage())?,
        period_ms: parse_duration(period)?.as_millis() as u64,
        burst,
    })
}

/// `RATIO[:MIN_PER_SEC]`, e.g. `0.1` or `0.2:5`.
pub fn parse_budget(text: &str) -> Result<wire::RetryBudget, String> {
    let usage = || format!("{text:?} is not a retry budget like 0.1 or 0.2:5 (RATIO[:MIN_PER_SEC])");
    let (ratio, min) = match text.split_once(':') {
        Some((ratio, min)) => (ratio, Some(min.parse().map_err(|_| usage())?)),
        None => (text, None),
    };
    Ok(wire::RetryBudget {
        ratio: ratio.parse().map_err(|_| usage())?,
        min_per_sec: min,
    })
}

/// An origin: `http://` or `https://`, a host, maybe a port; no path.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| format!("{text:?} is not an origin like https://ops.example.com"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        return Err(format!(
            "{text:?} is not an origin like https://ops.example.com (no path)"
        ));
    }
    Ok(text.to_owned())
}

/// `FAILURE_RATIO,MIN_REQUESTS,WINDOW_SECS,OPEN_SECS,HALF_OPEN_PROBES`.
pub fn parse_breaker(text: &str) -> Result<wire::BreakerConfig, String> {
    let usage = || {
        format!(
            "{text:?} is not a breaker like 0.5,20,60,30,2 (FAILURE_RATIO,MIN_REQUESTS,WINDOW_SECS,OPEN_SECS,HALF_OPEN_PROBES)"
        )
    };
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let [ratio, min, window, open, probes] = parts.as_slice() else {
        return Err(usage());
    };
    let number = |part: &str| part.parse::<u32>().map_err(|_| usage());
    Ok(wire::BreakerConfig {
        failure_ratio: ratio.parse().map_err(|_| usage())?,
        min_requests: number(min)?,
        window_secs: number(window)?,
        open_secs: number(open)?,
        half_open_probes: number(probes)?,
    })
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Connection as the role that owns (or will own) Steadfast's tables.
    #[arg(long, env = "STEADFAST_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// The role `steadfast serve` connects as: granted exactly what it needs.
    #[arg(long)]
    pub app_role: String,
    /// A role your application connects as, to enqueue inside its own
    /// transactions with steadfast.enqueue(...): granted that function and
    /// nothing else (docs/postgres.md). Repeat for several.
    #[arg(long)]
    pub enqueue_role: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// The claims-pipeline crash drill: N claims through six durable steps on a
    /// real server, worker processes SIGKILLed at random, and a recount of the
    /// downstreams' own ledgers for double bills and double charges. Exits 0
    /// only if every claim finished with none.
    #[command(
        after_help = "The last line printed is one JSON object: claims, finished, enrichment_billed, \
double_bills, payments, double_charges, kills.\n\nExample:\n  steadfast demo claims --claims 2000 --workers 4 --kill-interval-ms 300 --ledger-dir ./ledgers"
    )]
    Claims(ClaimsArgs),
    /// A worker process of the claims drill (started by `demo claims`).
    #[command(hide = true)]
    ClaimsWorker(ClaimsWorkerArgs),
    /// The retry-storm drill: a local downstream fails every call for
    /// --outage-secs, then recovers; N jobs go through it twice, once with a
    /// circuit breaker and a retry budget and once without, and the
    /// downstream's own count of calls is compared. Exits 0 only if no job
    /// was lost.
    #[command(
        after_help = "The last line printed is one JSON object: jobs, downstream_calls_with, \
downstream_calls_without, drain_secs_with, drain_secs_without, lost.\n\nExample:\n  steadfast demo storm --jobs 2000 --outage-secs 30"
    )]
    Storm(StormArgs),
}

#[derive(Debug, Args)]
pub struct StormArgs {
    /// Jobs to run through the downstream, in each of the two runs.
    #[arg(long, default_value_t = 2000)]
    pub jobs: usize,
    /// How long the downstream fails every call, from the start of each run.
    #[arg(long, default_value_t = 30)]
    pub outage_secs: u64,
    /// Jobs the worker runs at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Print only the JSON verdict (no readable summary).
    #[arg(long)]
    pub json: bool,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

#[derive(Debug, Args)]
pub struct ClaimsArgs {
    /// Claims to process.
    #[arg(long, default_value_t = 2000)]
    pub claims: usize,
    /// Worker processes running at once.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// SIGKILL a random worker (and start a replacement) this often.
    #[arg(long, default_value_t = 300)]
    pub kill_interval_ms: u64,
    /// Where the enrichment and payment services write their JSON Lines
    /// ledgers (and the server and workers their logs); a new temporary
    /// directory when absent.
    #[arg(long)]
    pub ledger_dir: Option<PathBuf>,
    /// Seed for claim amounts and the choice of victims (printed when random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
    /// The workers' language: `rust` (this binary's `demo claims-worker`) or
    /// `python` (`python -m steadfast.demo.claims`, from `pip install ./sdks/python`).
    #[arg(long, value_enum, default_value_t = ClaimsWorkerKind::Rust)]
    pub worker: ClaimsWorkerKind,
    /// The Python interpreter for `--worker python`.
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClaimsWorkerKind {
    Rust,
    Python,
}

#[derive(Debug, Args)]
pub struct ClaimsWorkerArgs {
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub key: String,
    #[arg(long)]
    pub enrichment_url: String,
    #[arg(long)]
    pub payments_url: String,
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    #[arg(long, default_value = "claims-worker")]
    pub worker_id: String,
}

#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Where the embedded database, its lock and admin.key live (without --database-url).
    #[arg(long, env = "STEADFAST_DATA_DIR", default_value = "./steadfast-data")]
    pub data_dir: PathBuf,
    /// Use PostgreSQL instead of embedded storage: postgres://ROLE:PASSWORD@HOST/DB, connecting as the
    /// application role (see docs/postgres.md). Many nodes may share one database.
    #[arg(long, env = "STEADFAST_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// PostgreSQL connections in this node's pool.
    #[arg(long, env = "STEADFAST_DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,

    /// Longest wait to open a PostgreSQL connection, or for a free pooled one, in seconds.
    #[arg(long, env = "STEADFAST_DATABASE_CONNECT_TIMEOUT_SECS", default_value_t = 5)]
    pub database_connect_timeout_secs: u64,

    /// Longest any PostgreSQL statement may run before it is cancelled, in milliseconds.
    #[arg(long, env = "STEADFAST_DATABASE_STATEMENT_TIMEOUT_MS", default_value_t = 10_000)]
    pub database_statement_timeout_ms: u64,
}

impl StorageArgs {
    /// The PostgreSQL pool the flags ask for, or what is wrong with them.
    pub fn pool_options(&self) -> Result<steadfast_postgres::PoolOptions, String> {
        let problems = [
            (
                !(1..=1000).contains(&self.database_pool_size),
                "--database-pool-size must be between 1 and 1000",
            ),
            (
                !(1..=300).contains(&self.database_connect_timeout_secs),
                "--database-connect-timeout-secs must be between 1 and 300",
            ),
            (
                !(100..=3_600_000).contains(&self.database_statement_timeout_ms),
                "--database-statement-timeout-ms must be between 100 and 3600000",
            ),
        ];
        if let Some((_, problem)) = problems.iter().find(|(bad, _)| *bad) {
            return Err((*problem).to_owned());
        }
        Ok(steadfast_postgres::PoolOptions {
            pool_size: self.database_pool_size,
            connect_timeout: std::time::Duration::from_secs(self.database_connect_timeout_secs),
            statement_timeout: std::time::Duration::from_millis(self.database_statement_timeout_ms),
        })
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: StorageArgs,

    /// Address to listen on.
    #[arg(long, env = "STEADFAST_LISTEN", default_value = "127.0.0.1:8650")]
    pub listen: SocketAddr,

    /// Serve HTTPS with this PEM certificate chain (leaf first); needs
    /// --tls-key-file. Without both, plain HTTP (e.g. behind a TLS proxy).
    #[arg(long, env = "STEADFAST_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// The PEM private key of --tls-cert-file.
    #[arg(long, env = "STEADFAST_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// Client connections open at once; more wait to be accepted.
    #[arg(long, env = "STEADFAST_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Time a client has to send a request's headers (and to finish the TLS
    /// handshake), idle keep-alive connections included, in seconds.
    #[arg(long, env = "STEADFAST_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,

    /// Time a client has to send a request's body once its headers are in,
    /// in seconds.
    #[arg(long, env = "STEADFAST_BODY_READ_TIMEOUT_SECS", default_value_t = 30)]
    pub body_read_timeout_secs: u64,

    /// Largest webhook delivery body (`POST /hooks/{id}`) accepted; 413 above it.
    #[arg(long, env = "STEADFAST_MAX_HOOK_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_hook_body_bytes: usize,

    /// Webhook deliveries per second one source may receive, sustained (429
    /// with Retry-After above it; per node).
    #[arg(long, env = "STEADFAST_HOOK_RATE_LIMIT", default_value_t = 2000)]
    pub hook_rate_limit: u32,

    /// Deliveries a source may receive in a burst above --hook-rate-limit.
    #[arg(long, env = "STEADFAST_HOOK_RATE_BURST", default_value_t = 4000)]
    pub hook_rate_burst: u32,

    /// Webhook deliveries being verified and stored at once on this node;
    /// past it, 429 with Retry-After at once.
    #[arg(long, env = "STEADFAST_MAX_HOOK_IN_FLIGHT", default_value_t = 256)]
    pub max_hook_in_flight: usize,

    /// Jobs one batch of a bulk retry or cancel acts on (one transaction each).
    #[arg(long, env = "STEADFAST_BULK_BATCH", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub bulk_batch: u32,

    /// The dashboard's origin as browsers see it, when a proxy in front terminates TLS
    /// (e.g. https://ops.example.com): forms must come from it, and cookies are Secure
    /// when it is https. Unset: this server's own scheme and Host.
    #[arg(long, env = "STEADFAST_UI_ORIGIN", value_parser = parse_origin)]
    pub ui_origin: Option<String>,

    /// A dashboard session unused this long ends (seconds).
    #[arg(long, env = "STEADFAST_UI_SESSION_IDLE_SECS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..))]
    pub ui_session_idle_secs: u64,

    /// A dashboard session ends this long after sign-in, however busy (seconds).
    #[arg(long, env = "STEADFAST_UI_SESSION_LIFETIME_SECS", default_value_t = 43200, value_parser = clap::value_parser!(u64).range(1..))]
    pub ui_session_lifetime_secs: u64,

    /// Dashboard sessions held at once on this node; past it the least recently used ends.
    #[arg(long, env = "STEADFAST_UI_MAX_SESSIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub ui_max_sessions: u32,

    /// A dashboard read still running after this is stopped (milliseconds).
    #[arg(long, env = "STEADFAST_UI_QUERY_TIMEOUT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub ui_query_timeout_ms: u64,

    /// How often live dashboard views refresh; a tenant's same view is read at most once per interval (seconds, at least 2).
    #[arg(long, env = "STEADFAST_UI_REFRESH_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub ui_refresh_secs: u64,

    /// Requests per second each API key may make, sustained (429 above it);
    /// a tenant may have its own (`steadfast tenant set-limits`).
    #[arg(long, env = "STEADFAST_KEY_RATE_LIMIT", default_value_t = 1000)]
    pub key_rate_limit: u32,

    /// Requests an API key may make in a burst above --key-rate-limit.
    #[arg(long, env = "STEADFAST_KEY_RATE_BURST", default_value_t = 2000)]
    pub key_rate_burst: u32,

    /// Failed authentications per second one client address may make,
    /// sustained (429 above it).
    #[arg(long, env = "STEADFAST_AUTH_FAILURE_RATE_LIMIT", default_value_t = 10)]
    pub auth_failure_rate_limit: u32,

    /// Failed authentications one client address may make in a burst.
    #[arg(long, env = "STEADFAST_AUTH_FAILURE_BURST", default_value_t = 100)]
    pub auth_failure_burst: u32,

    /// How often failed authentications are written to the audit log (one
    /// record per key, and one for all unknown keys, per interval), in seconds.
    #[arg(long, env = "STEADFAST_AUTH_FAILURE_RECORD_SECS", default_value_t = 60)]
    pub auth_failure_record_secs: u64,

    /// How long succeeded jobs are kept after they finish, unless their
    /// queue says otherwise: 7d, 12h, ... (then pruned with their attempts,
    /// steps, signals and idempotency key).
    #[arg(long, env = "STEADFAST_RETAIN_SUCCEEDED", default_value = "7d", value_parser = parse_duration)]
    pub retain_succeeded: Duration,

    /// How long dead and cancelled jobs are kept after they finish, unless
    /// their queue says otherwise.
    #[arg(long, env = "STEADFAST_RETAIN_FAILED", default_value = "30d", value_parser = parse_duration)]
    pub retain_failed: Duration,

    /// Unfinished jobs (scheduled, queued, running, waiting) a tenant may
    /// hold, unless it has its own cap (429 quota_exceeded above it).
    #[arg(long, env = "STEADFAST_MAX_UNFINISHED_JOBS", default_value_t = 1_000_000)]
    pub max_unfinished_jobs: u64,

    /// Largest request body in bytes (413 above it).
    #[arg(long, env = "STEADFAST_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Most items in one batch request: jobs in POST /v1/jobs/batch,
    /// completions in /v1/jobs/batch/complete, step operations in /v1/jobs/batch/steps.
    #[arg(long, env = "STEADFAST_MAX_BATCH_JOBS", default_value_t = 1000)]
    pub max_batch_jobs: usize,

    /// How long an idempotency key keeps returning the original job, in seconds.
    #[arg(long, env = "STEADFAST_DEDUP_WINDOW_SECS", default_value_t = 48 * 3600)]
    pub dedup_window_secs: u64,

    /// How long a lease lasts without a heartbeat, in seconds.
    #[arg(long, env = "STEADFAST_LEASE_TTL_SECS", default_value_t = 30)]
    pub lease_ttl_secs: u64,

    /// max_attempts for jobs that do not set it.
    #[arg(long, env = "STEADFAST_DEFAULT_MAX_ATTEMPTS", default_value_t = 25)]
    pub default_max_attempts: u32,

    /// timeout_secs for jobs that do not set it.
    #[arg(long, env = "STEADFAST_DEFAULT_TIMEOUT_SECS", default_value_t = 300)]
    pub default_timeout_secs: u64,

    /// Backoff bound of the first retry, in milliseconds; it doubles per failure.
    #[arg(long, env = "STEADFAST_RETRY_BASE_MS", default_value_t = 1000)]
    pub retry_base_ms: u64,

    /// Longest backoff between attempts, in seconds.
    #[arg(long, env = "STEADFAST_RETRY_CAP_SECS", default_value_t = 3600)]
    pub retry_cap_secs: u64,

    /// The Ed25519 key that signs audit checkpoints; keep it outside the database.
    /// On PostgreSQL this (or STEADFAST_AUDIT_SIGNING_KEY) is required and every
    /// node uses the same key (`steadfast audit create-key FILE` makes one). On
    /// embedded storage the default is <data-dir>/audit-signing.key, created
    /// (mode 0600) when missing.
    #[arg(long, env = "STEADFAST_AUDIT_SIGNING_KEY_FILE", conflicts_with = "audit_signing_key")]
    pub audit_signing_key_file: Option<PathBuf>,

    /// The audit signing key itself (64 hex digits), for deployments that
    /// pass secrets through the environment; prefer the variable to the flag.
    #[arg(long, env = "STEADFAST_AUDIT_SIGNING_KEY", hide_env_values = true)]
    pub audit_signing_key: Option<String>,

    /// How long audit records are kept, in days.
    #[arg(long, env = "STEADFAST_AUDIT_RETENTION_DAYS", default_value_t = 7 * 365)]
    pub audit_retention_days: u64,

    /// How often each tenant's signed audit checkpoint is logged, in seconds.
    #[arg(long, env = "STEADFAST_AUDIT_CHECKPOINT_INTERVAL_SECS", default_value_t = 3600)]
    pub audit_checkpoint_interval_secs: u64,

    /// SLO notifications being delivered at once, across tenants.
    #[arg(long, env = "STEADFAST_NOTIFY_CONCURRENCY", default_value_t = 16)]
    pub notify_concurrency: usize,

    /// SLO notifications being delivered at once for one tenant.
    #[arg(long, env = "STEADFAST_NOTIFY_PER_TENANT", default_value_t = 2)]
    pub notify_per_tenant: usize,

    /// Longest one notification delivery attempt may take, in seconds.
    #[arg(long, env = "STEADFAST_NOTIFY_TIMEOUT_SECS", default_value_t = 10)]
    pub notify_timeout_secs: u64,

    /// Serve /metrics without an API key (otherwise a reader or admin key is needed).
    #[arg(long, env = "STEADFAST_METRICS_PUBLIC")]
    pub metrics_public: bool,

    /// On SIGTERM, how long to let in-flight requests finish, in seconds.
    #[arg(long, env = "STEADFAST_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    #[command(after_help = "Example:\n  steadfast tenant create acme")]
    Create {
        /// 1–64 ASCII letters, digits and -_.:
        name: String,
        #[command(flatten)]
        data: StorageArgs,
    },
    /// List tenants.
    List {
        #[command(flatten)]
        data: StorageArgs,
    },
    /// Give a tenant its own request rate per key and cap on unfinished
    /// jobs (what is not given follows the server's defaults). Every node
    /// applies it within 5 s.
    #[command(
        after_help = "Examples:\n  steadfast tenant set-limits acme --key-rate-limit 50 --key-rate-burst 100 --max-unfinished-jobs 100000\n  \
steadfast tenant set-limits acme            # back to the server's defaults"
    )]
    SetLimits {
        name: String,
        /// Requests per second each of the tenant's keys may make.
        #[arg(long, requires = "key_rate_burst")]
        key_rate_limit: Option<u32>,
        /// The burst above --key-rate-limit.
        #[arg(long, requires = "key_rate_limit")]
        key_rate_burst: Option<u32>,
        /// Unfinished jobs (scheduled, queued, running, waiting) the tenant may hold.
        #[arg(long)]
        max_unfinished_jobs: Option<u64>,
        #[command(flatten)]
        data: StorageArgs,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Everything within the tenant, including retry and cancel.
    Admin,
    /// Enqueue, read, signal.
    Producer,
    /// Lease, heartbeat, complete, fail; read the jobs it leased.
    Worker,
    /// Read only.
    Reader,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key and print it (only the key, on stdout). It is shown once.
    #[command(after_help = "Example:\n  export STEADFAST_KEY=$(steadfast key create --tenant acme --role producer)")]
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        role: RoleArg,
        /// A label shown in listings and logs.
        #[arg(long, default_value = "")]
        name: String,
        /// Refuse the key after this long, like a revoked one: 90d, 12h, 30m, 2s
        /// (default: never).
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<Duration>,
        #[command(flatten)]
        data: StorageArgs,
    },
    /// Print a new key with the same tenant, role and name as key ID (only the
    /// key, on stdout), and revoke ID when --grace ends (default: at once).
    #[command(after_help = "Example:\n  steadfast key rotate 3f9a0c1d2e4b5a67 --grace 24h")]
    Rotate {
        id: String,
        /// How long the old key keeps working, so clients can switch: 24h, 30m (default 0s).
        #[arg(long, value_parser = parse_duration, default_value = "0s")]
        grace: Duration,
        /// The new key expires after this long (default: never).
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<Duration>,
        #[command(flatten)]
        data: StorageArgs,
    },
    /// Revoke a key by its id (the 16 hex digits after `sfk_`). Takes effect at once.
    #[command(after_help = "Example:\n  steadfast key revoke 3f9a0c1d2e4b5a67")]
    Revoke {
        id: String,
        #[command(flatten)]
        data: StorageArgs,
    },
    /// List a tenant's keys: id, role, created, expires, last used (to the
    /// minute), revocation, name; never secrets.
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        data: StorageArgs,
    },
}

#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// Server URL.
    #[arg(long, env = "STEADFAST_URL", default_value = "http://127.0.0.1:8650")]
    pub url: String,
    /// API key (see <data-dir>/admin.key after the first start).
    #[arg(long, env = "STEADFAST_KEY", hide_env_values = true)]
    pub key: String,
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long)]
    pub queue: String,
    /// The job's JSON payload.
    #[arg(long)]
    pub payload: String,
    /// Repeating the command with the same key returns the same job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    #[arg(long)]
    pub max_attempts: Option<i64>,
    #[arg(long)]
    pub timeout_secs: Option<i64>,
    /// -100 to 100; higher runs first.
    #[arg(long, allow_hyphen_values = true)]
    pub priority: Option<i64>,
    /// RFC 3339 time, e.g. 2030-01-01T09:00:00Z.
    #[arg(long)]
    pub run_at: Option<String>,
    /// What the queue's per-key rules count the job under (e.g. a customer id).
    #[arg(long)]
    pub flow_key: Option<String>,
    /// The downstream the job calls, whose breaker and limits hold it.
    #[arg(long)]
    pub resource: Option<String>,
    /// At most one unfinished job of the queue with this key.
    #[arg(long)]
    pub singleton_key: Option<String>,
    /// skip (answer the existing job) or replace (give it this payload).
    #[arg(long, requires = "singleton_key")]
    pub singleton_mode: Option<String>,
    /// Run only once no enqueue of the singleton key came for this long (ms).
    #[arg(long, requires = "singleton_key")]
    pub debounce_ms: Option<i64>,
    /// ... and never later than this after the first (ms).
    #[arg(long, requires = "debounce_ms")]
    pub debounce_max_ms: Option<i64>,
    /// Validate the payload against this version of the queue's schema
    /// instead of the newest.
    #[arg(long)]
    pub schema_version: Option<i64>,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Show a job with its full attempt history (JSON).
    Get {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List jobs, newest first (one JSON object per line).
    List {
        #[arg(long)]
        queue: Option<String>,
        /// scheduled, queued, running, succeeded, dead or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send a dead or cancelled job back to the queue (admin).
    Retry {
        id: String,
        /// Why; kept in the audit record with the key that acted.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a job that has not finished (admin).
    Cancel {
        id: String,
        /// Why; kept in the audit record with the key that acted.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Enqueue N no-op jobs (one by one, then in batches) and drain them with W workers.
    #[command(after_help = "Example:\n  steadfast bench throughput --jobs 20000 --workers 8 --json")]
    Throughput(ThroughputArgs),
    /// Schedule-to-start latency at a steady enqueue rate (one producer, one job per request).
    #[command(after_help = "Example:\n  steadfast bench latency --rate 200 --seconds 15 --json")]
    Latency(LatencyArgs),
    /// Drain jobs with no-op handlers, then with N checkpointed steps each: the cost of checkpoints.
    #[command(after_help = "Example:\n  steadfast bench steps --jobs 5000 --steps 3 --json")]
    Steps(StepsArgs),
    /// Webhook ingest: signed deliveries to a source, each verified and
    /// stored with its job before its 200; throughput, then latency at a steady rate.
    #[command(
        after_help = "Examples:\n  steadfast bench inbox --rate 1000 --seconds 10 --json\n  \
steadfast bench inbox --database-url postgres://steadfast_app@localhost/steadfast"
    )]
    Inbox(InboxArgs),
    /// Throughput, latency and server RSS with 10k, 100k and 1M jobs already
    /// queued, then restart-to-ready after a kill -9 with the largest backlog.
    #[command(after_help = "Examples:\n  steadfast bench scale --json\n  \
steadfast bench scale --levels 10000,100000 --database-url postgres://steadfast_app@localhost/steadfast")]
    Scale(ScaleArgs),
    /// The adapter for the peers' benchmark harness (bench/compare.sh): the
    /// same W1/W2 sub-commands every peer implements, against a running server.
    #[command(subcommand)]
    Peer(PeerCommand),
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Backlogs to measure at, ascending (jobs waiting in the queue), at most 10,000,000.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub levels: Vec<usize>,
    /// Jobs enqueued and drained at each level (the backlog is the same before and after).
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Concurrent workers draining, each leasing and completing 100 jobs per request.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// The latency workload at each level: jobs per second, one request each ...
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// ... for this many seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Run the server on this PostgreSQL database (an application role that
    /// `steadfast migrate --app-role` granted) instead of a fresh embedded data dir.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Give up after this many seconds in all.
    #[arg(long, default_value_t = 1800)]
    pub timeout_secs: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What `peers/<engine>/peer.sh` must implement. Every job a worker runs
/// appends `i t_enq t_start t_end` to a file in `$REC_DIR` (one write per job).
#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Enqueue N jobs in batches of 1,000; print {"n", "seconds"}.
    Enqueue {
        n: usize,
        #[command(flatten)]
        server: PeerServer,
    },
    /// Enqueue K jobs with negative ids, one by one (a readiness probe).
    Warm {
        k: usize,
        #[command(flatten)]
        server: PeerServer,
    },
    /// Enqueue one job per request at a steady RATE for SECS seconds; print {"n", "seconds", "rate", "max_lag_ms"}.
    Produce {
        rate: u32,
        secs: u32,
        #[command(flatten)]
        server: PeerServer,
    },
    /// Run jobs until SIGTERM, appending one record per job to $REC_DIR.
    Worker {
        /// Jobs run at once.
        #[arg(long, env = "STEADFAST_BENCH_CONCURRENCY", default_value_t = 64)]
        concurrency: usize,
        /// Directory for the per-job records.
        #[arg(long, env = "REC_DIR")]
        rec_dir: PathBuf,
        #[command(flatten)]
        server: PeerServer,
    },
}

#[derive(Debug, Args)]
pub struct PeerServer {
    #[arg(long, env = "STEADFAST_URL")]
    pub url: String,
    #[arg(long, env = "STEADFAST_KEY", hide_env_values = true)]
    pub key: String,
    #[arg(long, env = "STEADFAST_BENCH_QUEUE", default_value = "bench")]
    pub queue: String,
}

#[derive(Debug, Args)]
pub struct StepsArgs {
    /// Jobs per phase.
    #[arg(long, default_value_t = 5_000)]
    pub jobs: usize,
    /// Checkpointed steps per job (1 to 100).
    #[arg(long, default_value_t = 3)]
    pub steps: u32,
    /// Jobs the SDK worker runs at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Give up after this many seconds in all.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub target: BenchTarget,
}

/// Which server a benchmark drives, and how it reports.
#[derive(Debug, Args)]
pub struct BenchTarget {
    /// Use this server instead of starting one on a fresh temporary data dir.
    #[arg(long, requires = "key")]
    pub url: Option<String>,
    /// Key for --url, with a role that may enqueue and lease (admin).
    #[arg(long)]
    pub key: Option<String>,
    /// Run the benchmark's own server on this PostgreSQL database (an
    /// application role that `steadfast migrate --app-role` granted; each run
    /// makes a fresh tenant) instead of a fresh embedded data dir.
    #[arg(long, conflicts_with = "url")]
    pub database_url: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InboxArgs {
    /// Deliveries in the throughput phase, each a new event.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Concurrent senders in the throughput phase.
    #[arg(long, default_value_t = 32)]
    pub senders: usize,
    /// Deliveries per second in the latency phase (open loop) ...
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// ... for this many seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    #[command(flatten)]
    pub target: BenchTarget,
}

#[derive(Debug, Args)]
pub struct LatencyArgs {
    /// Jobs enqueued per second, one request each.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// How long to produce (at most 1,000,000 jobs in all).
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
    /// Concurrent workers, each long-polling for up to 10 jobs.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// After producing, give up if jobs have not all started within this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub target: BenchTarget,
}

#[derive(Debug, Args)]
pub struct ThroughputArgs {
    /// Jobs per phase.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Concurrent workers draining.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Jobs per lease request.
    #[arg(long, default_value_t = 100)]
    pub lease_batch: u32,
    /// Concurrent producers for the one-by-one enqueue phase.
    #[arg(long, default_value_t = 32)]
    pub producers: usize,
    /// Jobs per batch in the batched enqueue phase.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Give up after this many seconds in all.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub target: BenchTarget,
    /// Run the local server without collecting metrics, to measure what
    /// collecting them costs (not with --url).
    #[arg(long, conflicts_with = "url")]
    pub no_metrics: bool,
    /// Drain by completing each lease's jobs in one request
    /// (`POST /v1/jobs/batch/complete`) instead of one request per job.
    #[arg(long)]
    pub batch_complete: bool,
}

/// A duration as an operator writes it: `90d`, `12h`, `30m`, `2s`, or a
/// combination (`1h 30m`); days are 24 hours. At most 100 years.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let span: jiff::Span = text
        .parse()
        .map_err(|error| format!("{text:?} is not a duration like 90d, 12h, 30m or 2s ({error})"))?;
    let duration = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|error| format!("{text:?}: {error}"))?;
    let duration = Duration::try_from(duration).map_err(|_| format!("{text:?} must not be negative"))?;
    if duration > Duration::from_secs(100 * 365 * 86_400) {
        return Err(format!("{text:?} is longer than 100 years"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(30 * 60)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-2s").is_err());
        assert!(parse_duration("3 months").is_err(), "months have no fixed length");
    }
}
