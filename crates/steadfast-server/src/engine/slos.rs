//! SLO evaluation and alert notifications. Alerts are raised and cleared by
//! the duties (every minute), exported as metrics, and, when an SLO has a
//! notification URL, delivered as HTTP POSTs through Steadfast's own durable
//! jobs: enqueued in the tenant's `steadfast.notifications` queue, retried
//! with backoff, never lost.

use std::time::Duration;

use serde_json::json;
use steadfast_core::lifecycle::EnqueueRequest;
use steadfast_core::slo::{self, Severity};
use steadfast_store::{SloRecord, StoreError, TenantScope, auth};

use super::Engine;
use crate::metrics::SloLabels;

/// The internal queue notifications travel through.
pub const NOTIFICATION_QUEUE: &str = "steadfast.notifications";
/// Attempts to deliver one notification before it is dead (with backoff, hours).
const NOTIFICATION_ATTEMPTS: i64 = 20;

/// An SLO and where it stands now.
#[derive(Debug, Clone)]
pub struct SloState {
    pub record: SloRecord,
    pub burn_rates: Vec<(Duration, f64)>,
    pub budget_remaining: f64,
    pub firing: Vec<Severity>,
}

impl Engine {
    /// Computes an SLO's burn rates, budget and which alerts should fire, now.
    pub async fn slo_state(&self, scope: &TenantScope, record: SloRecord) -> Result<SloState, StoreError> {
        let now = self.now();
        let slo = &record.slo;
        let store = self.store();
        let mut burn_rates = Vec::new();
        for window in slo::windows() {
            let since = now.checked_sub(window).unwrap_or(now);
            let counts = store.slo_counts(scope, &slo.queue, slo.kind, since, now).await?;
            burn_rates.push((window, slo::burn_rate(counts, slo.objective)));
        }
        let since = now.checked_sub(slo.window).unwrap_or(now);
        let budget = store.slo_counts(scope, &slo.queue, slo.kind, since, now).await?;
        let burn = |window: Duration| burn_rates.iter().find(|(w, _)| *w == window).map_or(0.0, |(_, b)| *b);
        let firing = slo::firing(burn);
        Ok(SloState {
            budget_remaining: slo::budget_remaining(budget, slo.objective),
            burn_rates,
            firing,
            record,
        })
    }

    /// Evaluates every tenant's SLOs: raises and clears alerts, updates the
    /// alert metrics, and enqueues notifications. Returns the alerts that changed.
    pub async fn evaluate_slos(&self) -> Result<usize, StoreError> {
        let mut changed = 0;
        for tenant in self.store().list_tenants().await? {
            let scope = auth::system(&tenant);
            for record in self.store().list_slos(&scope).await? {
                let state = self.slo_state(&scope, record).await?;
                let slo = &state.record.slo;
                let previous = self
                    .store()
                    .set_slo_firing(&scope, slo.id, &state.firing, self.now())
                    .await?;
                let was: Vec<Severity> = previous.iter().map(|(s, _)| *s).collect();
                for severity in [Severity::Page, Severity::Ticket] {
                    let labels = SloLabels {
                        queue: self.metrics().queue(slo.queue.as_str()),
                        slo: slo.name.clone(),
                        severity: severity.as_str().to_owned(),
                    };
                    self.metrics()
                        .slo_alerts
                        .get_or_create(&labels)
                        .set(i64::from(state.firing.contains(&severity)));
                }
                if was == state.firing {
                    continue;
                }
                changed += 1;
                let raised: Vec<&str> = state
                    .firing
                    .iter()
                    .filter(|s| !was.contains(s))
                    .map(|s| s.as_str())
                    .collect();
                let cleared: Vec<&str> = was
                    .iter()
                    .filter(|s| !state.firing.contains(s))
                    .map(|s| s.as_str())
                    .collect();
                tracing::warn!(tenant = %tenant.name, slo = %slo.name, queue = %slo.queue, ?raised, ?cleared, "SLO alert changed");
                if let Some(url) = &slo.notify_url {
                    let burn_rates: serde_json::Map<String, serde_json::Value> = state
                        .burn_rates
                        .iter()
                        .map(|(w, b)| (slo::window_label(*w), json!(b)))
                        .collect();
                    let payload = json!({
                        "url": url,
                        "notification": {
                            "slo": {"id": slo.id.to_string(), "name": slo.name, "queue": slo.queue.as_str(), "objective": slo.objective},
                            "raised": raised,
                            "cleared": cleared,
                            "firing": state.firing.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                            "burn_rates": burn_rates,
                            "budget_remaining": state.budget_remaining,
                            "at": self.now().to_string(),
                        },
                    });
                    let request = EnqueueRequest {
                        queue: NOTIFICATION_QUEUE.into(),
                        payload: payload.to_string(),
                        max_attempts: Some(NOTIFICATION_ATTEMPTS),
                        // An attempt's deadline outlasts its delivery's timeout.
                        timeout_secs: Some(self.inner.config.delivery.lease().as_secs() as i64),
                        ..EnqueueRequest::default()
                    };
                    let spec = request
                        .validate(self.limits(), [0; 32], self.now())
                        .expect("a valid notification");
                    self.enqueue(&scope, vec![spec]).await?;
                    self.inner.deliveries_nudge.notify_one();
                }
            }
        }
        Ok(changed)
    }
}
