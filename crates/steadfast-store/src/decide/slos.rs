//! Decisions about an SLO's alert state.

use steadfast_core::audit::Draft;
use steadfast_core::slo::Severity;
use steadfast_core::{TenantId, Timestamp};

use crate::SloRecord;
use crate::audit::drafts;

/// The alert state to store for an SLO, and its audit record when it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SloFiring {
    pub page_since: Option<Timestamp>,
    pub ticket_since: Option<Timestamp>,
    /// Present when the set of firing severities changed.
    pub audit: Option<(TenantId, Draft)>,
}

/// `firing` severities fire now: those already firing keep their start
/// time, new ones start at `now`.
pub fn slo_firing(record: &SloRecord, firing: &[Severity], now: Timestamp) -> SloFiring {
    let since = |severity: Severity| {
        firing.contains(&severity).then(|| {
            record
                .firing
                .iter()
                .find(|(s, _)| *s == severity)
                .map_or(now, |(_, since)| *since)
        })
    };
    let before: Vec<Severity> = record.firing.iter().map(|(s, _)| *s).collect();
    let audit = (before != firing).then(|| {
        let names: Vec<&str> = firing.iter().map(|s| s.as_str()).collect();
        let draft = drafts::slo_changed("slo.alert", &record.slo, serde_json::json!({ "firing": names }));
        (record.slo.tenant_id, draft)
    });
    SloFiring {
        page_since: since(Severity::Page),
        ticket_since: since(Severity::Ticket),
        audit,
    }
}
