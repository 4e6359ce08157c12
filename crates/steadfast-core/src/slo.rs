//! Service level objectives and multi-window burn-rate alerts, as in the SRE
//! Workbook's "Alerting on SLOs": page when the error budget burns 14.4 times
//! too fast over both 1 h and 5 min, or 6 times over 6 h and 30 min; open a
//! ticket at 3 times over 1 d and 2 h, or once over 3 d and 6 h. Requiring the
//! short window too makes an alert clear soon after the burning stops.

use std::time::Duration;

use crate::{QueueName, TenantId, Timestamp};

/// What counts as a good event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SloKind {
    /// A finished job is good when it succeeded (dead is bad; cancelled does not count).
    SuccessRatio,
    /// A finished job is good when it succeeded within `threshold` of being enqueued.
    Latency { threshold: Duration },
}

impl SloKind {
    /// Its stored form: a name, and the latency threshold in milliseconds.
    pub fn to_parts(self) -> (&'static str, Option<i64>) {
        match self {
            SloKind::SuccessRatio => ("success_ratio", None),
            SloKind::Latency { threshold } => ("latency", Some(threshold.as_millis() as i64)),
        }
    }

    pub fn from_parts(name: &str, threshold_ms: Option<i64>) -> SloKind {
        match (name, threshold_ms) {
            ("latency", Some(ms)) => SloKind::Latency {
                threshold: Duration::from_millis(ms.max(0) as u64),
            },
            _ => SloKind::SuccessRatio,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    pub id: uuid::Uuid,
    pub tenant_id: TenantId,
    pub name: String,
    pub queue: QueueName,
    pub kind: SloKind,
    /// The target ratio of good events, e.g. 0.99.
    pub objective: f64,
    /// The compliance window (default 28 days).
    pub window: Duration,
    /// Where alert changes are POSTed, through Steadfast's own durable jobs.
    pub notify_url: Option<String>,
    pub created_at: Timestamp,
}

/// Good and total events in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub good: u64,
    pub total: u64,
}

impl Counts {
    pub fn bad(&self) -> u64 {
        self.total - self.good
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Page,
    Ticket,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

/// One multi-window rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    pub severity: Severity,
    pub long: Duration,
    pub short: Duration,
    pub threshold: f64,
}

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;

/// The four standard rules.
pub const RULES: [Rule; 4] = [
    Rule {
        severity: Severity::Page,
        long: Duration::from_secs(HOUR),
        short: Duration::from_secs(5 * MINUTE),
        threshold: 14.4,
    },
    Rule {
        severity: Severity::Page,
        long: Duration::from_secs(6 * HOUR),
        short: Duration::from_secs(30 * MINUTE),
        threshold: 6.0,
    },
    Rule {
        severity: Severity::Ticket,
        long: Duration::from_secs(24 * HOUR),
        short: Duration::from_secs(2 * HOUR),
        threshold: 3.0,
    },
    Rule {
        severity: Severity::Ticket,
        long: Duration::from_secs(72 * HOUR),
        short: Duration::from_secs(6 * HOUR),
        threshold: 1.0,
    },
];

/// Every window the rules look at, shortest first.
pub fn windows() -> Vec<Duration> {
    let mut windows: Vec<Duration> = RULES.iter().flat_map(|rule| [rule.long, rule.short]).collect();
    windows.sort();
    windows.dedup();
    windows
}

/// How many times faster than sustainable the budget burns: the error rate
/// over the allowed error rate. No events, no burn.
pub fn burn_rate(counts: Counts, objective: f64) -> f64 {
    if counts.total == 0 {
        return 0.0;
    }
    let error_rate = counts.bad() as f64 / counts.total as f64;
    error_rate / (1.0 - objective)
}

/// The share of the window's error budget left (negative when overspent).
pub fn budget_remaining(counts: Counts, objective: f64) -> f64 {
    1.0 - burn_rate(counts, objective)
}

/// Which severities fire, given each window's burn rate.
pub fn firing(burn: impl Fn(Duration) -> f64) -> Vec<Severity> {
    let mut firing: Vec<Severity> = RULES
        .iter()
        .filter(|rule| burn(rule.long) > rule.threshold && burn(rule.short) > rule.threshold)
        .map(|rule| rule.severity)
        .collect();
    firing.sort();
    firing.dedup();
    firing
}

/// A short label for a window: `5m`, `1h`, `3d`.
pub fn window_label(window: Duration) -> String {
    let secs = window.as_secs();
    if secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else {
        format!("{}m", secs / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burn_rate_is_the_error_rate_over_the_budget() {
        assert!(
            (burn_rate(Counts { good: 99, total: 100 }, 0.99) - 1.0).abs() < 1e-9,
            "exactly on budget"
        );
        assert!((burn_rate(Counts { good: 50, total: 100 }, 0.99) - 50.0).abs() < 1e-9);
        assert_eq!(burn_rate(Counts::default(), 0.99), 0.0);
    }

    #[test]
    fn a_page_needs_both_windows_and_clears_with_the_short_one() {
        let hot = |w: Duration| if w <= Duration::from_secs(HOUR) { 20.0 } else { 0.0 };
        assert_eq!(firing(hot), vec![Severity::Page]);
        let cooled = |w: Duration| if w == Duration::from_secs(HOUR) { 20.0 } else { 0.0 };
        assert_eq!(firing(cooled), vec![], "the 5-minute window stopped burning");
        let slow = |_| 2.0;
        assert_eq!(firing(slow), vec![Severity::Ticket]);
        assert_eq!(
            windows().iter().map(|w| window_label(*w)).collect::<Vec<_>>(),
            ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]
        );
    }
}
