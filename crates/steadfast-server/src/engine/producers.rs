//! Producer sequence numbers: recorded with the enqueues that carry them.

use std::collections::BTreeMap;

use steadfast_core::ProducerId;
use steadfast_core::lifecycle::JobSpec;
use steadfast_store::{StoreError, TenantScope};

use super::Engine;

/// The sequence numbers each producer sent in `specs`.
pub(super) fn sequences_of(specs: &[JobSpec]) -> BTreeMap<ProducerId, Vec<u64>> {
    let mut sequences: BTreeMap<ProducerId, Vec<u64>> = BTreeMap::new();
    for (producer, sequence) in specs.iter().filter_map(|spec| spec.producer.as_ref()) {
        sequences.entry(producer.clone()).or_default().push(*sequence);
    }
    sequences
}

impl Engine {
    /// Records the numbers (each producer in its own transaction, in id
    /// order) and counts the holes they opened.
    pub(super) async fn receive_sequences(
        &self,
        scope: &TenantScope,
        sequences: BTreeMap<ProducerId, Vec<u64>>,
    ) -> Result<(), StoreError> {
        for (producer, numbers) in sequences {
            let (_, opened) = self
                .store()
                .receive_sequences(scope, &producer, numbers, self.now())
                .await?;
            if opened > 0 {
                tracing::warn!(%producer, opened, "a producer's sequence numbers have a hole");
                if self.records_metrics() {
                    self.inner.metrics.producer_gaps.inc_by(opened);
                }
            }
        }
        Ok(())
    }
}
