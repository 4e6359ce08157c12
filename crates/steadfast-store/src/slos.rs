use async_trait::async_trait;
use steadfast_core::slo::{Counts, Severity, Slo, SloKind};
use steadfast_core::{QueueName, Timestamp};

use crate::{StoreError, TenantScope};

/// An SLO with its alert state.
#[derive(Debug, Clone, PartialEq)]
pub struct SloRecord {
    pub slo: Slo,
    /// Severities firing now, and since when.
    pub firing: Vec<(Severity, Timestamp)>,
}

impl SloRecord {
    /// The record stored as the SLO and the start of each severity's alert.
    pub fn new(slo: Slo, page_since: Option<Timestamp>, ticket_since: Option<Timestamp>) -> SloRecord {
        let firing = [(Severity::Page, page_since), (Severity::Ticket, ticket_since)]
            .into_iter()
            .filter_map(|(severity, since)| since.map(|since| (severity, since)))
            .collect();
        SloRecord { slo, firing }
    }
}

/// Service level objectives of one tenant, and the counts they are computed from.
#[async_trait]
pub trait SloStore {
    /// `AlreadyExists` if the tenant has an SLO of that name.
    async fn create_slo(&self, scope: &TenantScope, slo: Slo, now: Timestamp) -> Result<Slo, StoreError>;
    async fn list_slos(&self, scope: &TenantScope) -> Result<Vec<SloRecord>, StoreError>;
    async fn delete_slo(&self, scope: &TenantScope, id: uuid::Uuid, now: Timestamp) -> Result<(), StoreError>;
    /// Good and total finished jobs of `queue` with `finished_at` in `(since, until]`.
    async fn slo_counts(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        kind: SloKind,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Counts, StoreError>;
    /// Records which severities fire now (keeping the start time of those
    /// already firing), audited when it changes. Returns the previous state.
    async fn set_slo_firing(
        &self,
        scope: &TenantScope,
        id: uuid::Uuid,
        firing: &[Severity],
        now: Timestamp,
    ) -> Result<Vec<(Severity, Timestamp)>, StoreError>;
}
