//! The `steadfast` binary: parse flags, set up logging, run one command.

mod admin;
mod audit;
mod bench;
mod cli;
mod client;
mod demo;
mod serve;

use clap::Parser;
use opentelemetry_sdk::trace::SdkTracerProvider;
use steadfast_server::telemetry;
use tracing_subscriber::EnvFilter;

use crate::cli::{BenchCommand, Cli, Command, LogFormat};

fn init_logging(format: LogFormat, default_level: &str, traces: Option<&SdkTracerProvider>) {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{Layer as _, Registry};

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    // RUST_LOG filters the logs only: exported spans (one per request, at
    // INFO) do not depend on how chatty the logs are.
    let fmt: Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(filter).boxed(),
    };
    let traces = traces.map(|provider| telemetry::layer(provider).with_filter(LevelFilter::INFO));
    tracing_subscriber::registry().with(fmt).with(traces).init();
}

/// `SSL_CERT_FILE` adds trusted roots for every outbound TLS connection
/// (`steadfast_protocol::tls`). The library that reads it skips a path that
/// does not exist; an operator who set it meant it, so say so.
fn check_ssl_cert_file() -> Result<(), serve::Exit> {
    match std::env::var_os("SSL_CERT_FILE") {
        Some(path) if !std::path::Path::new(&path).is_file() => Err(serve::Exit {
            code: 78,
            message: format!("SSL_CERT_FILE names {}, which is not a file", path.to_string_lossy()),
        }),
        _ => Ok(()),
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    check_ssl_cert_file()?;
    match command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Tenant(command) => admin::tenant_command(command).await,
        Command::Key(command) => admin::key_command(command).await,
        Command::Enqueue(args) => client::enqueue(args).await,
        Command::Job(command) => client::job_command(command).await,
        Command::Bench(BenchCommand::Throughput(args)) => bench::throughput(args).await,
        Command::Bench(BenchCommand::Latency(args)) => bench::latency(args).await,
        Command::Bench(BenchCommand::Steps(args)) => bench::steps(args).await,
        Command::Bench(BenchCommand::Inbox(args)) => bench::inbox(args).await,
        Command::Bench(BenchCommand::Peer(command)) => bench::peer(command).await,
        Command::Bench(BenchCommand::Scale(args)) => bench::scale(args).await,
        Command::Demo(command) => demo::run(command).await,
        Command::Migrate(args) => admin::migrate(args).await,
        Command::Slo(command) => client::slo_command(command).await,
        Command::Source(command) => client::source_command(command).await,
        Command::Queue(command) => client::queue_command(command).await,
        Command::Resource(command) => client::resource_command(command).await,
        Command::Schedule(command) => client::schedule_command(command).await,
        Command::Audit(command) => audit::run(command).await,
    }
}

fn main() {
    let cli = Cli::parse();
    // Before the runtime starts: the exporter runs on its own thread with a
    // blocking HTTP client, which must not be built inside the runtime.
    let traces = telemetry::init_from_env();
    // A benchmark's own server would interleave its routine logs with the
    // results: only warnings, unless RUST_LOG asks for more.
    let default_level = if matches!(cli.command, Command::Bench(_)) {
        "warn"
    } else {
        "info"
    };
    init_logging(cli.log_format, default_level, traces.as_ref());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("can start the runtime");
    let result = runtime.block_on(run(cli.command));
    drop(runtime);
    if let Some(traces) = traces
        && let Err(error) = traces.shutdown()
    {
        eprintln!("OpenTelemetry: could not flush spans: {error}");
    }
    if let Err(error) = result {
        let code = error.downcast_ref::<serve::Exit>().map_or(1, |exit| exit.code);
        eprintln!("error: {error:#}");
        std::process::exit(code);
    }
}
