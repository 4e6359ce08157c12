//! Refused deliveries, counted per source and written as one audit record
//! per source per interval: never one write per request.

use std::collections::HashMap;
use std::sync::Mutex;

use steadfast_core::Timestamp;
use steadfast_store::{SignatureFailures, Source};

use crate::inbox::verify::Refusal;

/// Sources whose refusals are counted per interval; refusals to further
/// sources are only in the metric until the next record.
const COUNTED_SOURCES_BOUND: usize = 10_000;

/// Refused deliveries since the last record, by source.
#[derive(Debug, Default)]
pub(in crate::engine) struct RefusedDeliveries {
    by_source: Mutex<HashMap<String, (Source, SignatureFailures)>>,
}

impl RefusedDeliveries {
    pub(in crate::engine) fn count(&self, source: &Source, refusal: Refusal, now: Timestamp) {
        let mut by_source = self.by_source.lock().expect("the refusal counts are never poisoned");
        if by_source.len() >= COUNTED_SOURCES_BOUND && !by_source.contains_key(&source.id) {
            return;
        }
        let (_, failures) = by_source.entry(source.id.clone()).or_insert_with(|| {
            let failures = SignatureFailures {
                source_id: source.id.clone(),
                count: 0,
                first_at: now,
                last_at: now,
                reasons: Vec::new(),
            };
            (source.clone(), failures)
        });
        failures.count += 1;
        failures.last_at = now;
        add_reason(&mut failures.reasons, refusal.as_str(), 1);
    }

    pub(in crate::engine) fn take(&self) -> Vec<(Source, SignatureFailures)> {
        let taken = std::mem::take(&mut *self.by_source.lock().expect("the refusal counts are never poisoned"));
        taken.into_values().collect()
    }

    /// Puts back counts that could not be written, merged with any counted since.
    pub(in crate::engine) fn put_back(&self, unwritten: Vec<(Source, SignatureFailures)>) {
        let mut by_source = self.by_source.lock().expect("the refusal counts are never poisoned");
        for (source, old) in unwritten {
            match by_source.get_mut(&source.id) {
                None => {
                    by_source.insert(source.id.clone(), (source, old));
                }
                Some((_, newer)) => {
                    newer.count += old.count;
                    newer.first_at = newer.first_at.min(old.first_at);
                    for (reason, n) in &old.reasons {
                        add_reason(&mut newer.reasons, reason, *n);
                    }
                }
            }
        }
    }
}

fn add_reason(reasons: &mut Vec<(String, u64)>, reason: &str, n: u64) {
    match reasons.iter_mut().find(|(known, _)| known == reason) {
        Some((_, count)) => *count += n,
        None => reasons.push((reason.to_owned(), n)),
    }
}
