//! The claims pipeline, as a worker process runs it: six steps, each
//! memoized, with the enrichment step reconciling an uncertain outcome and
//! the payment step passing its stable key to the provider.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use steadfast_sdk::{Client, JobContext, JobError, Worker, WorkerConfig};

use super::services::{Charge, Enrichment};

/// Claims above this amount wait for a human approval signal.
pub const APPROVAL_THRESHOLD: u64 = 10_000;
pub const QUEUE: &str = "claims";
pub const APPROVAL_SIGNAL: &str = "approval";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim {
    pub claim_id: String,
    pub amount: u64,
}

#[derive(Clone)]
struct Downstreams {
    http: reqwest::Client,
    enrichment: String,
    payments: String,
}

fn downstream_error(what: &str) -> impl Fn(reqwest::Error) -> JobError + '_ {
    move |error| JobError::retryable(format!("{what}: {error}"))
}

impl Downstreams {
    async fn enrich(&self, claim_id: &str) -> Result<Enrichment, JobError> {
        let response = self
            .http
            .post(format!("{}/enrich", self.enrichment))
            .json(&json!({ "claim_id": claim_id }))
            .send()
            .await
            .map_err(downstream_error("enrichment"))?;
        response.json().await.map_err(downstream_error("enrichment"))
    }

    /// Asks the enrichment API whether it already billed this claim.
    async fn already_enriched(&self, claim_id: &str) -> Result<Option<Enrichment>, JobError> {
        #[derive(Deserialize)]
        struct Lookup {
            result: Option<Enrichment>,
        }
        let response = self
            .http
            .get(format!("{}/enrich/{claim_id}", self.enrichment))
            .send()
            .await
            .map_err(downstream_error("enrichment lookup"))?;
        let lookup: Lookup = response.json().await.map_err(downstream_error("enrichment lookup"))?;
        Ok(lookup.result)
    }

    async fn charge(&self, claim: &Claim, idempotency_key: &str) -> Result<Charge, JobError> {
        let response = self
            .http
            .post(format!("{}/charges", self.payments))
            .header("Idempotency-Key", idempotency_key)
            .json(&json!({ "claim_id": claim.claim_id, "amount": claim.amount }))
            .send()
            .await
            .map_err(downstream_error("payments"))?;
        response.json().await.map_err(downstream_error("payments"))
    }
}

async fn process(ctx: JobContext, downstreams: Downstreams) -> Result<serde_json::Value, JobError> {
    let claim: Claim = ctx.payload()?;
    let valid = ctx
        .step("validate", |_| async { Ok::<_, JobError>(claim.amount > 0) })
        .await?;
    if !valid {
        return Err(JobError::fatal("a claim needs a positive amount"));
    }
    let (enricher, enriched_claim) = (&downstreams, &claim);
    let enrichment = ctx
        .step("enrich", |key| async move {
            // The paid API ignores idempotency keys. If an earlier attempt
            // started this step and vanished, ask before paying again.
            if key.uncertain().is_some()
                && let Some(billed) = enricher.already_enriched(&enriched_claim.claim_id).await?
            {
                return Ok(billed);
            }
            enricher.enrich(&enriched_claim.claim_id).await
        })
        .await?;
    let score = ctx
        .step("score", |_| async { Ok::<_, JobError>(100 - enrichment.risk) })
        .await?;
    let approved_by = if claim.amount > APPROVAL_THRESHOLD {
        let approval: Option<serde_json::Value> = ctx
            .wait_for_signal(APPROVAL_SIGNAL, Some(Duration::from_secs(3600)))
            .await?;
        let by = |approval: &serde_json::Value| approval["by"].as_str().unwrap_or("someone").to_owned();
        match approval {
            // The dashboard's Reject sends `approved: false`: no payment.
            Some(approval) if approval["approved"] == false => {
                let reason = approval["reason"].as_str().unwrap_or("no reason given");
                return Err(JobError::fatal(format!("rejected by {}: {reason}", by(&approval))));
            }
            Some(approval) => by(&approval),
            None => return Err(JobError::fatal("no approval within an hour")),
        }
    } else {
        ctx.step("approve", |_| async { Ok::<_, JobError>("auto".to_owned()) })
            .await?
    };
    // The provider honours idempotency keys: the step's stable key makes a
    // retried charge harmless.
    let (provider, paid_claim) = (&downstreams, &claim);
    let charge = ctx
        .step("pay", |key| async move { provider.charge(paid_claim, &key).await })
        .await?;
    let notice = ctx
        .step("notify", |_| async {
            Ok::<_, JobError>(format!("claim {} paid as {}", claim.claim_id, charge.charge_id))
        })
        .await?;
    Ok(json!({ "score": score, "approved_by": approved_by, "charge": charge.charge_id, "notice": notice }))
}

/// Runs a claims worker until SIGTERM.
pub async fn run_worker(
    client: Client,
    enrichment: String,
    payments: String,
    concurrency: usize,
    worker_id: String,
) -> anyhow::Result<()> {
    let downstreams = Downstreams {
        http: reqwest::Client::new(),
        enrichment,
        payments,
    };
    let config = WorkerConfig {
        worker_id,
        concurrency,
        poll_wait: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(5),
    };
    Worker::new(client, config)
        .handle(QUEUE, move |ctx| process(ctx, downstreams.clone()))
        .run()
        .await?;
    Ok(())
}
