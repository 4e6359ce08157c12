//! Which finished jobs a queue keeps.

use steadfast_core::Timestamp;

use crate::{PruneCutoffs, QueueRetention, Retention};

/// The cutoffs for a queue at `now`: its own retention where set, else the
/// server's.
pub fn prune_cutoffs(defaults: Retention, queue: QueueRetention, now: Timestamp) -> PruneCutoffs {
    let before = |kept: std::time::Duration| now.checked_sub(kept).unwrap_or(Timestamp::MIN);
    PruneCutoffs {
        succeeded_before: before(queue.succeeded.unwrap_or(defaults.succeeded)),
        failed_before: before(queue.failed.unwrap_or(defaults.failed)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_queue_keeps_its_own_retention_where_set() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let days = |n: u64| Duration::from_secs(n * 86_400);
        let defaults = Retention {
            succeeded: days(7),
            failed: days(30),
        };
        let own = QueueRetention {
            succeeded: Some(days(1)),
            failed: None,
        };
        let cutoffs = prune_cutoffs(defaults, own, now);
        assert_eq!(cutoffs.succeeded_before, now.checked_sub(days(1)).unwrap());
        assert_eq!(cutoffs.failed_before, now.checked_sub(days(30)).unwrap());
    }
}
