//! The claims pipeline's two downstreams, as small local HTTP services that
//! log every request they receive to their own JSON Lines ledger.
//!
//! - The enrichment API bills every `POST /enrich` and ignores idempotency
//!   keys, but answers `GET /enrich/{claim}`: "did you already bill it?".
//! - The payment provider honours `Idempotency-Key`: a repeated key returns
//!   the first charge and charges nothing.
//!
//! Each request's bookkeeping happens without an await in between, so a
//! client that disconnects mid-request either was billed and logged, or neither.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub const ENRICHMENT_LEDGER: &str = "enrichment.jsonl";
pub const PAYMENTS_LEDGER: &str = "payments.jsonl";

/// What the enrichment API returns for a claim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Enrichment {
    pub claim_id: String,
    pub risk: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Charge {
    pub charge_id: String,
    pub claim_id: String,
    pub amount: u64,
}

#[derive(Debug, Deserialize)]
pub struct ClaimRef {
    pub claim_id: String,
}

#[derive(Debug, Deserialize)]
pub struct ChargeRequest {
    pub claim_id: String,
    pub amount: u64,
}

struct Ledger(Mutex<File>);

impl Ledger {
    fn open(path: &Path) -> std::io::Result<Ledger> {
        Ok(Ledger(Mutex::new(
            OpenOptions::new().create(true).append(true).open(path)?,
        )))
    }

    fn append(&self, entry: serde_json::Value) {
        let mut file = self.0.lock().expect("not poisoned");
        writeln!(file, "{entry}").expect("the ledger is writable");
    }
}

#[derive(Clone)]
struct Enricher {
    ledger: Arc<Ledger>,
    billed: Arc<Mutex<HashMap<String, Enrichment>>>,
}

/// Deterministic "risk" so any run can be recomputed.
fn risk_of(claim_id: &str) -> u32 {
    claim_id
        .bytes()
        .fold(7u32, |acc, b| acc.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 100
}

async fn enrich(State(state): State<Enricher>, Json(claim): Json<ClaimRef>) -> Json<Enrichment> {
    // A paid API is slow; the pause widens the window for a kill mid-call.
    tokio::time::sleep(Duration::from_millis(3)).await;
    let result = Enrichment {
        claim_id: claim.claim_id.clone(),
        risk: risk_of(&claim.claim_id),
    };
    state
        .billed
        .lock()
        .expect("not poisoned")
        .insert(claim.claim_id.clone(), result.clone());
    state
        .ledger
        .append(json!({"op": "enrich", "claim_id": claim.claim_id, "idempotency_key": null, "billed": true}));
    Json(result)
}

async fn lookup(State(state): State<Enricher>, UrlPath(claim_id): UrlPath<String>) -> Json<serde_json::Value> {
    let found = state.billed.lock().expect("not poisoned").get(&claim_id).cloned();
    state
        .ledger
        .append(json!({"op": "lookup", "claim_id": claim_id, "idempotency_key": null, "billed": false}));
    Json(json!({ "billed": found.is_some(), "result": found }))
}

#[derive(Clone)]
struct Payments {
    ledger: Arc<Ledger>,
    charges: Arc<Mutex<HashMap<String, Charge>>>,
}

async fn charge(
    State(state): State<Payments>,
    headers: HeaderMap,
    Json(request): Json<ChargeRequest>,
) -> Result<Json<Charge>, (axum::http::StatusCode, &'static str)> {
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return Err((axum::http::StatusCode::BAD_REQUEST, "Idempotency-Key is required"));
    };
    tokio::time::sleep(Duration::from_millis(2)).await;
    let mut charges = state.charges.lock().expect("not poisoned");
    if let Some(existing) = charges.get(&key) {
        state
            .ledger
            .append(json!({"op": "charge", "claim_id": request.claim_id, "idempotency_key": key, "charged": false}));
        return Ok(Json(existing.clone()));
    }
    let charge = Charge {
        charge_id: format!("ch_{}", charges.len() + 1),
        claim_id: request.claim_id.clone(),
        amount: request.amount,
    };
    charges.insert(key.clone(), charge.clone());
    state
        .ledger
        .append(json!({"op": "charge", "claim_id": request.claim_id, "idempotency_key": key, "charged": true}));
    Ok(Json(charge))
}

/// Starts both services on loopback ports; returns their base URLs.
pub async fn start(ledger_dir: &Path) -> anyhow::Result<(String, String)> {
    let enricher = Enricher {
        ledger: Arc::new(Ledger::open(&ledger_dir.join(ENRICHMENT_LEDGER))?),
        billed: Arc::default(),
    };
    let payments = Payments {
        ledger: Arc::new(Ledger::open(&ledger_dir.join(PAYMENTS_LEDGER))?),
        charges: Arc::default(),
    };
    let enrichment_app = Router::new()
        .route("/enrich", post(enrich))
        .route("/enrich/{claim_id}", get(lookup))
        .with_state(enricher);
    let payments_app = Router::new().route("/charges", post(charge)).with_state(payments);
    let mut urls = Vec::new();
    for app in [enrichment_app, payments_app] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        urls.push(format!("http://{}", listener.local_addr()?));
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    Ok((urls.remove(0), urls.remove(0)))
}

/// Counts from a ledger: per claim, how many requests billed (or charged).
pub fn tally(path: &Path, flag: &str) -> anyhow::Result<HashMap<String, usize>> {
    let mut per_claim = HashMap::new();
    for line in std::fs::read_to_string(path)?.lines() {
        let entry: serde_json::Value = serde_json::from_str(line)?;
        if entry[flag] == true {
            *per_claim
                .entry(entry["claim_id"].as_str().unwrap_or_default().to_owned())
                .or_insert(0) += 1;
        }
    }
    Ok(per_claim)
}

/// How many requests of kind `op` a ledger recorded.
pub fn count_ops(path: &Path, op: &str) -> anyhow::Result<usize> {
    let mut count = 0;
    for line in std::fs::read_to_string(path)?.lines() {
        let entry: serde_json::Value = serde_json::from_str(line)?;
        count += usize::from(entry["op"] == op);
    }
    Ok(count)
}

/// How many requests a ledger recorded.
pub fn count_lines(path: &Path) -> anyhow::Result<usize> {
    Ok(std::fs::read_to_string(path)?.lines().count())
}
