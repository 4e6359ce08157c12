//! The overview's live numbers, read at most once per refresh interval per
//! tenant: however many tabs poll, the database sees one read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use steadfast_core::slo::{self, SloKind};
use steadfast_core::{TenantId, Timestamp};
use steadfast_store::TenantScope;
use steadfast_store::dashboard::{Attention, QueueSummary};

use super::Failure;
use crate::Engine;

/// How far back throughput, failures and lapsed leases are counted.
pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);
/// How many of each kind of trouble the overview lists.
pub const ATTENTION_LIMIT: u32 = 20;

/// An SLO as the overview shows it.
#[derive(Debug, Clone)]
pub struct SloLine {
    pub name: String,
    pub queue: String,
    pub objective: String,
    /// `(window, burn rate)`, shortest window first.
    pub burn_rates: Vec<(String, String)>,
    pub budget_remaining: String,
    pub firing: Vec<String>,
}

#[derive(Debug)]
pub struct Overview {
    pub read_at: Timestamp,
    pub queues: Vec<QueueSummary>,
    pub slos: Vec<SloLine>,
    pub attention: Attention,
}

/// The last "Verify now" of a tenant's audit chain.
#[derive(Debug, Clone)]
pub struct Verification {
    pub at: Timestamp,
    pub intact: bool,
    pub head_seq: u64,
    pub problem: String,
}

/// The last overview read for each tenant, and the last verification of
/// each tenant's audit chain (kept in this node's memory: a restart shows
/// the chain as not verified since).
#[derive(Debug, Default)]
pub struct Live {
    overviews: Mutex<HashMap<TenantId, Arc<Overview>>>,
    verifications: Mutex<HashMap<TenantId, Verification>>,
}

impl Live {
    pub fn verification(&self, tenant: TenantId) -> Option<Verification> {
        self.verifications.lock().expect("never poisoned").get(&tenant).cloned()
    }

    pub fn set_verification(&self, tenant: TenantId, verification: Verification) {
        self.verifications
            .lock()
            .expect("never poisoned")
            .insert(tenant, verification);
    }

    /// The tenant's overview: the one read within the refresh interval, or
    /// a fresh read.
    pub async fn overview(&self, engine: &Engine, scope: &TenantScope) -> Result<Arc<Overview>, Failure> {
        let now = engine.now();
        let every = engine.config().dashboard.refresh_every;
        let cached = self
            .overviews
            .lock()
            .expect("never poisoned")
            .get(&scope.tenant_id())
            .cloned();
        if let Some(overview) = cached.filter(|o| o.read_at.saturating_add(every).is_ok_and(|until| now < until)) {
            return Ok(overview);
        }
        let fresh = Arc::new(read(engine, scope, now).await?);
        self.overviews
            .lock()
            .expect("never poisoned")
            .insert(scope.tenant_id(), fresh.clone());
        Ok(fresh)
    }
}

async fn read(engine: &Engine, scope: &TenantScope, now: Timestamp) -> Result<Overview, Failure> {
    let limit = engine.config().dashboard.query_time_limit;
    let since = now.saturating_sub(WINDOW).unwrap_or(now);
    let store = engine.store();
    let queues = store.queue_summaries(scope, since, limit).await?;
    let attention = store.attention(scope, since, ATTENTION_LIMIT, limit).await?;
    let mut slos = Vec::new();
    for record in store.list_slos(scope).await? {
        let state = engine.slo_state(scope, record).await?;
        let slo = &state.record.slo;
        let kind = match slo.kind {
            SloKind::Latency { threshold } => format!(" within {} ms", threshold.as_millis()),
            SloKind::SuccessRatio => " succeed".to_owned(),
        };
        slos.push(SloLine {
            name: slo.name.clone(),
            queue: slo.queue.to_string(),
            objective: format!(
                "{:.2}%{kind} over {}",
                slo.objective * 100.0,
                slo::window_label(slo.window)
            ),
            burn_rates: state
                .burn_rates
                .iter()
                .map(|(window, rate)| (slo::window_label(*window), format!("{rate:.2}×")))
                .collect(),
            budget_remaining: format!("{:.1}%", state.budget_remaining * 100.0),
            firing: state.firing.iter().map(|s| s.as_str().to_owned()).collect(),
        });
    }
    Ok(Overview {
        read_at: now,
        queues,
        slos,
        attention,
    })
}
