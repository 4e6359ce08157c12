//! The overview's live numbers, read at most once per refresh interval per
//! tenant: however many tabs poll, the database sees one read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use steadfast_core::slo::{self, SloKind};
use steadfast_core::{Job, TenantId, Timestamp, WaitFor};
use steadfast_store::TenantScope;
use steadfast_store::dashboard::{Attention, QueueSummary};

use super::Failure;
use super::format::{Moment, moment};
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

/// A job that needs someone, as the overview lists it.
#[derive(Debug, Clone)]
pub struct JobLine {
    pub id: String,
    pub queue: String,
    pub state: &'static str,
    pub detail: String,
    pub at: Moment,
}

/// What needs attention, as lines: the cache keeps these, not the jobs
/// (whose payloads may be large).
#[derive(Debug, Default)]
pub struct Trouble {
    pub dead: Vec<JobLine>,
    pub uncertain: Vec<JobLine>,
    pub approvals: Vec<JobLine>,
    pub lapsed: Vec<JobLine>,
}

#[derive(Debug)]
pub struct Overview {
    pub read_at: Timestamp,
    pub queues: Vec<QueueSummary>,
    pub slos: Vec<SloLine>,
    pub trouble: Trouble,
}

fn trouble(attention: Attention) -> Trouble {
    let job_line = |job: &Job, detail: String, at: Timestamp| JobLine {
        id: job.id.to_string(),
        queue: job.queue.to_string(),
        state: job.state.as_str(),
        detail,
        at: moment(at),
    };
    Trouble {
        dead: attention
            .dead
            .iter()
            .map(|job| {
                let error = job.last_error.as_ref();
                let detail = match error.and_then(|e| e.kind.as_deref()) {
                    Some(kind) => format!("{kind}: {}", error.map_or("", |e| e.message.as_str())),
                    None => error.map_or_else(String::new, |e| e.message.clone()),
                };
                job_line(job, detail, job.finished_at.unwrap_or(job.updated_at))
            })
            .collect(),
        uncertain: attention
            .uncertain_steps
            .iter()
            .map(|s| JobLine {
                id: s.job_id.to_string(),
                queue: s.queue.to_string(),
                state: s.job_state.as_str(),
                detail: format!("step {} (started by attempt {})", s.step, s.attempt),
                at: moment(s.started_at),
            })
            .collect(),
        approvals: attention
            .awaiting_signals
            .iter()
            .map(|job| {
                let signal = match job.wait.as_ref().map(|w| &w.wait_for) {
                    Some(WaitFor::Signal { name, .. }) => name.to_string(),
                    _ => String::new(),
                };
                job_line(job, format!("waits for signal {signal}"), job.updated_at)
            })
            .collect(),
        lapsed: attention
            .lapsed
            .iter()
            .map(|a| JobLine {
                id: a.job_id.to_string(),
                queue: a.queue.to_string(),
                state: a.outcome.as_str(),
                detail: format!("attempt {} on worker {}", a.attempt, a.worker_id),
                at: moment(a.ended_at),
            })
            .collect(),
    }
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
    /// One read at a time per tenant: polls that find the cache stale
    /// together wait for the one read rather than each reading.
    reading: Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>,
    verifications: Mutex<HashMap<TenantId, Verification>>,
}

/// Overviews nobody asked for in this long are forgotten.
const FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

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
        let tenant = scope.tenant_id();
        let every = engine.config().dashboard.refresh_every;
        let fresh_enough = |now: Timestamp| {
            let cached = self.overviews.lock().expect("never poisoned").get(&tenant).cloned();
            cached.filter(|o| o.read_at.saturating_add(every).is_ok_and(|until| now < until))
        };
        if let Some(overview) = fresh_enough(engine.now()) {
            return Ok(overview);
        }
        let turn = self
            .reading
            .lock()
            .expect("never poisoned")
            .entry(tenant)
            .or_default()
            .clone();
        let _reading = turn.lock().await;
        // Another poll may have read it while this one waited its turn.
        let now = engine.now();
        if let Some(overview) = fresh_enough(now) {
            return Ok(overview);
        }
        let fresh = Arc::new(read(engine, scope, now).await?);
        let mut overviews = self.overviews.lock().expect("never poisoned");
        overviews.retain(|_, o| o.read_at.saturating_add(FORGET_AFTER).is_ok_and(|until| now < until));
        overviews.insert(tenant, fresh.clone());
        self.reading
            .lock()
            .expect("never poisoned")
            .retain(|t, lock| overviews.contains_key(t) || Arc::strong_count(lock) > 1);
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
        trouble: trouble(attention),
    })
}
