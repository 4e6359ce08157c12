//! Which finished jobs a queue keeps.

use std::time::Duration;

use steadfast_core::Timestamp;

use crate::{PruneCutoffs, QueueRetention, Retention};

/// The cutoffs for a queue at `now`: its own retention where set, else the
/// server's, but never shorter than `slo_window`, the longest window of
/// the queue's SLOs: their burn rates and budget count the queue's
/// finished jobs, and pruning one kind sooner than the other would skew
/// them (and page someone for nothing).
pub fn prune_cutoffs(
    defaults: Retention,
    queue: QueueRetention,
    slo_window: Option<Duration>,
    now: Timestamp,
) -> PruneCutoffs {
    let kept = |own: Option<Duration>, default: Duration| own.unwrap_or(default).max(slo_window.unwrap_or_default());
    let before = |kept: Duration| now.checked_sub(kept).unwrap_or(Timestamp::MIN);
    PruneCutoffs {
        succeeded_before: before(kept(queue.succeeded, defaults.succeeded)),
        failed_before: before(kept(queue.failed, defaults.failed)),
    }
}

#[cfg(test)]
mod tests {
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
        let cutoffs = prune_cutoffs(defaults, own, None, now);
        assert_eq!(cutoffs.succeeded_before, now.checked_sub(days(1)).unwrap());
        assert_eq!(cutoffs.failed_before, now.checked_sub(days(30)).unwrap());

        // A queue with a 28-day SLO keeps both kinds for 28 days at least.
        let cutoffs = prune_cutoffs(defaults, own, Some(days(28)), now);
        assert_eq!(cutoffs.succeeded_before, now.checked_sub(days(28)).unwrap());
        assert_eq!(cutoffs.failed_before, now.checked_sub(days(30)).unwrap());
    }
}
