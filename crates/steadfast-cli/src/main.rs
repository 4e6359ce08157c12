//! The `steadfast` binary: parse flags, set up logging, run one command.

mod admin;
mod audit;
mod bench;
mod cli;
mod client;
mod demo;
mod serve;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{BenchCommand, Cli, Command, LogFormat};

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve::run(args).await,
        Command::Tenant(command) => admin::tenant_command(command).await,
        Command::Key(command) => admin::key_command(command).await,
        Command::Enqueue(args) => client::enqueue(args).await,
        Command::Job(command) => client::job_command(command).await,
        Command::Bench(BenchCommand::Throughput(args)) => bench::throughput(args).await,
        Command::Demo(command) => demo::run(command).await,
        Command::Migrate(args) => admin::migrate(args).await,
        Command::Slo(command) => client::slo_command(command).await,
        Command::Audit(command) => audit::run(command).await,
    }
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("can start the runtime");
    if let Err(error) = runtime.block_on(run(cli.command)) {
        let code = error.downcast_ref::<serve::Exit>().map_or(1, |exit| exit.code);
        eprintln!("error: {error:#}");
        std::process::exit(code);
    }
}
