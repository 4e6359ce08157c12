//! Bulk operations: started by a request, worked through in the
//! background one batch per operation in turn, so one tenant's large
//! operation never starves another's.

use std::time::Duration;

use steadfast_store::bulk::{BulkAction, BulkFilter, BulkOperation, BulkSpec, BulkStatus, NewBulk};
use steadfast_store::{StoreError, TenantScope};

use super::Engine;

/// Most running operations one pass looks at.
const PASS_LIMIT: u32 = 100;
/// Longest pause between passes when no operation is running.
const IDLE: Duration = Duration::from_secs(1);

impl Engine {
    /// A dry run: the jobs `filter` matches now, the read stopped after
    /// `time_limit` when one is given.
    pub async fn count_bulk(
        &self,
        scope: &TenantScope,
        action: BulkAction,
        filter: &BulkFilter,
        time_limit: Option<Duration>,
    ) -> Result<u64, StoreError> {
        self.store().count_bulk(scope, action, filter, time_limit).await
    }

    /// Starts an operation; the duties take it from here.
    pub async fn start_bulk(&self, scope: &TenantScope, spec: BulkSpec) -> Result<BulkOperation, StoreError> {
        let new = NewBulk {
            id: self.new_uuid(),
            spec,
        };
        let started = self.store().start_bulk(scope, new, self.now()).await?;
        self.inner.bulk_nudge.notify_one();
        Ok(started)
    }

    pub async fn cancel_bulk(&self, scope: &TenantScope, id: uuid::Uuid) -> Result<BulkOperation, StoreError> {
        self.store().cancel_bulk(scope, id, self.now()).await
    }

    /// One batch of every running operation (at most [`PASS_LIMIT`]);
    /// how many are still running afterwards.
    pub async fn run_bulk_once(&self) -> Result<usize, StoreError> {
        let batch = self.inner.config.bulk_batch;
        let mut running = 0;
        for (tenant, id) in self.store().running_bulk(PASS_LIMIT).await? {
            // One operation's failing batch (storage trouble) must not hold
            // up the others: it is logged and tried again next pass.
            let stepped = match self.store().step_bulk(tenant, id, batch, self.now()).await {
                Ok(stepped) => stepped,
                Err(error) => {
                    tracing::warn!(%error, operation = %id, "a bulk operation's batch failed; retrying");
                    continue;
                }
            };
            for queue in &stepped.ready {
                self.inner.wakeups.wake(tenant, queue);
            }
            if stepped.operation.status == BulkStatus::Running {
                running += 1;
            }
        }
        Ok(running)
    }

    /// Works through running operations until the engine drains: pass after
    /// pass while any runs, else when nudged or every second.
    pub(super) async fn run_bulk(self) {
        let mut draining = self.inner.draining.subscribe();
        while !*draining.borrow_and_update() {
            let pause = match self.run_bulk_once().await {
                Ok(0) => IDLE,
                Ok(_) => Duration::ZERO,
                Err(error) => {
                    tracing::warn!(%error, "a bulk operation's batch failed; retrying");
                    IDLE
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.inner.bulk_nudge.notified() => {}
                _ = draining.changed() => {}
            }
        }
    }
}
