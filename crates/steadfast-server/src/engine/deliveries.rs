//! Delivering SLO notifications: HTTP POSTs to receivers that tenants
//! chose, the one duty that waits on the outside world. Each delivery runs
//! in its own task, at most [`DeliveryLimits::concurrency`] at once and
//! [`DeliveryLimits::per_tenant`] per tenant, each attempt bounded by
//! [`DeliveryLimits::timeout`]: a receiver that never answers holds one of
//! its own tenant's slots until the timeout, and holds up nothing else.

use std::collections::HashMap;
use std::time::Duration;

use steadfast_core::lifecycle::Failure;
use steadfast_core::{AttemptError, KeyId, QueueName, Role, TenantId, WorkerId};
use steadfast_protocol::tls::TrustedRoots;
use steadfast_store::{LeasedJob, Principal, StoreError, TenantScope, auth};
use tokio::task::{Id, JoinSet};

use super::Engine;
use super::slos::NOTIFICATION_QUEUE;

/// Bounds on notification delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryLimits {
    /// Deliveries in flight at once, across tenants (default 16).
    pub concurrency: usize,
    /// Deliveries in flight at once for one tenant (default 2).
    pub per_tenant: usize,
    /// How long one attempt may take, connecting included (default 10 s).
    pub timeout: Duration,
}

impl DeliveryLimits {
    /// How long a delivery holds its notification's lease: past the
    /// attempt's timeout, so the lease never lapses while the receiver is
    /// still being waited on (which would deliver it twice at once).
    pub fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(30)
    }
}

impl Default for DeliveryLimits {
    fn default() -> Self {
        DeliveryLimits {
            concurrency: 16,
            per_tenant: 2,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Deliveries in flight, across passes, with the tenant of each.
#[derive(Default)]
pub(super) struct Deliveries {
    running: JoinSet<bool>,
    tenants: HashMap<Id, TenantId>,
    per_tenant: HashMap<TenantId, usize>,
    /// Where the next pass starts in the list of tenants: each pass starts
    /// one further, so tenants late in the list are not always the ones
    /// left without a free slot.
    next_first: usize,
}

impl Deliveries {
    fn in_flight(&self, tenant: TenantId) -> usize {
        self.per_tenant.get(&tenant).copied().unwrap_or(0)
    }

    fn start(&mut self, tenant: TenantId, delivery: impl Future<Output = bool> + Send + 'static) {
        let task = self.running.spawn(delivery);
        self.tenants.insert(task.id(), tenant);
        *self.per_tenant.entry(tenant).or_default() += 1;
    }

    /// Frees the slot of a finished delivery; whether it was delivered.
    fn finished(&mut self, done: Result<(Id, bool), tokio::task::JoinError>) -> bool {
        let (id, delivered) = match done {
            Ok((id, delivered)) => (id, delivered),
            Err(error) => (error.id(), false),
        };
        if let Some(tenant) = self.tenants.remove(&id)
            && let Some(count) = self.per_tenant.get_mut(&tenant)
        {
            *count -= 1;
            if *count == 0 {
                self.per_tenant.remove(&tenant);
            }
        }
        delivered
    }

    /// Frees the slots of the deliveries that have finished, without waiting.
    pub(super) fn reap(&mut self) {
        while let Some(done) = self.running.try_join_next_with_id() {
            self.finished(done);
        }
    }

    /// Waits for every delivery in flight; how many were delivered.
    pub(super) async fn wait_all(&mut self) -> usize {
        let mut delivered = 0;
        while let Some(done) = self.running.join_next_with_id().await {
            delivered += usize::from(self.finished(done));
        }
        delivered
    }
}

impl Engine {
    /// The HTTP client deliveries use: over `https` it trusts
    /// [`EngineConfig::outbound_roots`](super::EngineConfig::outbound_roots).
    /// If the system's roots cannot be loaded, `https` deliveries fail (and
    /// are retried) while plain `http` ones still go out.
    pub fn outbound_http(&self) -> reqwest::Client {
        let roots = match &self.inner.config.outbound_roots {
            Some(roots) => Ok(roots.clone()),
            None => TrustedRoots::system(),
        };
        let roots = roots.unwrap_or_else(|error| {
            tracing::error!(%error, "no trusted roots for https notifications");
            TrustedRoots::none()
        });
        reqwest::Client::builder()
            .tls_backend_preconfigured(roots.client_config())
            .build()
            .expect("a client with a preconfigured TLS backend builds")
    }

    /// Delivers pending notifications: one POST each, as [`Deliveries`]
    /// allows; a failure goes back through the retry policy like any job.
    /// Waits for this pass's deliveries and returns how many succeeded.
    pub async fn deliver_notifications(&self, http: &reqwest::Client) -> Result<usize, StoreError> {
        let mut deliveries = Deliveries::default();
        self.start_deliveries(http, &mut deliveries).await?;
        Ok(deliveries.wait_all().await)
    }

    /// Leases each tenant's pending notifications, as far as free slots
    /// allow, and starts delivering them. A tenant whose lease fails is
    /// logged and passed over; the others are still served.
    pub(super) async fn start_deliveries(
        &self,
        http: &reqwest::Client,
        deliveries: &mut Deliveries,
    ) -> Result<(), StoreError> {
        let limits = self.inner.config.delivery;
        let queue = QueueName::new(NOTIFICATION_QUEUE).expect("valid");
        let worker = WorkerId::new("steadfast-notifier").expect("valid");
        let mut tenants = self.store().list_tenants().await?;
        if tenants.is_empty() {
            return Ok(());
        }
        let first = deliveries.next_first % tenants.len();
        tenants.rotate_left(first);
        deliveries.next_first = first + 1;
        for tenant in tenants {
            let free = limits.concurrency.saturating_sub(deliveries.running.len());
            if free == 0 {
                break;
            }
            let wanted = limits
                .per_tenant
                .saturating_sub(deliveries.in_flight(tenant.id))
                .min(free);
            if wanted == 0 {
                continue;
            }
            let principal = Principal {
                scope: auth::system(&tenant),
                role: Role::Admin,
                key_id: KeyId::parse("0000000000000000").expect("valid"),
                key_name: "steadfast".into(),
            };
            let leased = self
                .lease_for(
                    &principal,
                    vec![queue.clone()],
                    wanted as u32,
                    worker.clone(),
                    Duration::ZERO,
                    limits.lease(),
                )
                .await;
            let leased = match leased {
                Ok(leased) => leased,
                Err(error) => {
                    tracing::warn!(%error, tenant_id = %tenant.id, "leasing notifications failed");
                    continue;
                }
            };
            for job in leased {
                let delivery = self.clone().deliver(http.clone(), principal.scope.clone(), job);
                deliveries.start(tenant.id, delivery);
            }
        }
        Ok(())
    }

    /// Delivers one notification and records the outcome; whether it was
    /// delivered. A failure to record is logged: the lease then lapses and
    /// the notification is delivered again (at least once).
    async fn deliver(self, http: reqwest::Client, scope: TenantScope, job: LeasedJob) -> bool {
        let limits = self.inner.config.delivery;
        let token = job.job.lease.as_ref().map(|l| l.token.clone()).unwrap_or_default();
        let payload: serde_json::Value = serde_json::from_str(&job.job.payload).unwrap_or_default();
        let url = payload["url"].as_str().unwrap_or_default();
        let sent = http
            .post(url)
            .timeout(limits.timeout)
            .json(&payload["notification"])
            .send()
            .await;
        let (delivered, recorded) = match sent {
            Ok(response) if response.status().is_success() => {
                let recorded = self.complete(&scope, job.job.id, &token, "null".into()).await;
                (true, recorded.map(|_| ()))
            }
            outcome => {
                let message = match outcome {
                    Ok(response) => format!("the receiver answered {}", response.status()),
                    Err(error) => format!("delivery failed: {error}"),
                };
                let failure = Failure {
                    error: AttemptError {
                        message,
                        kind: Some("notification".into()),
                    },
                    retryable: true,
                    retry_after: None,
                };
                (false, self.fail(&scope, job.job.id, &token, failure).await.map(|_| ()))
            }
        };
        if let Err(error) = &recorded {
            tracing::warn!(%error, job_id = %job.job.id, "recording a notification's delivery failed");
        }
        delivered && recorded.is_ok()
    }
}
