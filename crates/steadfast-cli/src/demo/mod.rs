//! `steadfast demo`: runnable demonstrations. `claims` is the crash drill
//! for durable workflows; `claims-worker` is the worker process it starts;
//! `storm` is the flow-control drill (a downstream outage, with and
//! without a breaker and a retry budget).

mod drill;
mod pipeline;
mod services;
mod storm;

use crate::cli::DemoCommand;

pub async fn run(command: DemoCommand) -> anyhow::Result<()> {
    match command {
        DemoCommand::Claims(args) => drill::run(args).await,
        DemoCommand::Storm(args) => storm::run(args).await,
        DemoCommand::ClaimsWorker(args) => {
            let client = steadfast_sdk::Client::new(&args.url, &args.key)?;
            pipeline::run_worker(
                client,
                args.enrichment_url,
                args.payments_url,
                args.concurrency,
                args.worker_id,
            )
            .await
        }
    }
}
