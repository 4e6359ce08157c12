//! Producer sequence numbers: a producer (an edge collector) numbers what
//! it sends 1, 2, 3, …; Steadfast keeps, per producer, the highest number
//! seen and the ranges below it never received, so the producer (or its
//! operator) can prove nothing was lost, or see exactly what was.

use async_trait::async_trait;
use jiff::Timestamp;
use steadfast_core::{ProducerId, TenantId};

use crate::{StoreError, TenantScope};

/// Missing ranges kept per producer; past it the lowest are forgotten
/// (counted in [`ProducerState::forgotten`]).
pub const MAX_MISSING_RANGES: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerState {
    pub tenant_id: TenantId,
    pub id: ProducerId,
    /// The highest sequence number received.
    pub highest: u64,
    /// Sequence numbers below `highest` never received, as inclusive
    /// ranges, lowest first.
    pub missing: Vec<(u64, u64)>,
    /// Holes that ever opened (a sequence number arrived past one not yet seen).
    pub gaps_total: u64,
    /// Missing numbers dropped from `missing` to keep it bounded.
    pub forgotten: u64,
    pub first_seen_at: Timestamp,
    pub last_seen_at: Timestamp,
}

impl ProducerState {
    pub fn new(tenant_id: TenantId, id: ProducerId, now: Timestamp) -> ProducerState {
        ProducerState {
            tenant_id,
            id,
            highest: 0,
            missing: Vec::new(),
            gaps_total: 0,
            forgotten: 0,
            first_seen_at: now,
            last_seen_at: now,
        }
    }

    /// Takes in the numbers one request carried, received at `now`; how
    /// many holes they opened. Both backends call this between their read
    /// and their write of the producer's row.
    pub fn receive_all(&mut self, sequences: &[u64], now: Timestamp) -> u64 {
        self.last_seen_at = now;
        sequences.iter().map(|sequence| self.receive(*sequence)).sum()
    }

    /// `missing` as stored: JSON `[[start, end], ...]`.
    pub fn missing_column(&self) -> String {
        serde_json::to_string(&self.missing).expect("ranges serialize")
    }

    /// How many sequence numbers below `highest` are missing now.
    pub fn missing_count(&self) -> u64 {
        self.missing.iter().map(|(from, to)| to - from + 1).sum()
    }

    /// Takes in one received sequence number (at least 1); how many holes
    /// it opened (0 or 1). A number received before changes nothing.
    pub fn receive(&mut self, sequence: u64) -> u64 {
        if sequence > self.highest {
            let opened = sequence > self.highest + 1;
            if opened {
                self.missing.push((self.highest + 1, sequence - 1));
                self.gaps_total += 1;
                self.bound();
            }
            self.highest = sequence;
            return u64::from(opened);
        }
        // Below the highest: it fills (part of) a hole, or was seen before.
        let Some(index) = self
            .missing
            .iter()
            .position(|(from, to)| (*from..=*to).contains(&sequence))
        else {
            return 0;
        };
        let (from, to) = self.missing[index];
        match (sequence == from, sequence == to) {
            (true, true) => {
                self.missing.remove(index);
            }
            (true, false) => self.missing[index].0 = sequence + 1,
            (false, true) => self.missing[index].1 = sequence - 1,
            (false, false) => {
                self.missing[index].1 = sequence - 1;
                self.missing.insert(index + 1, (sequence + 1, to));
                self.bound();
            }
        }
        0
    }

    fn bound(&mut self) {
        while self.missing.len() > MAX_MISSING_RANGES {
            let (from, to) = self.missing.remove(0);
            self.forgotten += to - from + 1;
        }
    }
}

#[async_trait]
pub trait ProducerStore: Send + Sync {
    /// Records sequence numbers of `producer` received (with the jobs they
    /// made, or replays of them); the state after, and how many holes they opened.
    async fn receive_sequences(
        &self,
        scope: &TenantScope,
        producer: &ProducerId,
        sequences: Vec<u64>,
        now: Timestamp,
    ) -> Result<(ProducerState, u64), StoreError>;

    async fn producer(&self, scope: &TenantScope, producer: &ProducerId) -> Result<Option<ProducerState>, StoreError>;

    /// The tenant's producers by id, at most `limit`, after `after`.
    async fn list_producers(
        &self,
        scope: &TenantScope,
        after: Option<&ProducerId>,
        limit: u32,
    ) -> Result<Vec<ProducerState>, StoreError>;
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn state() -> ProducerState {
        ProducerState::new(
            TenantId(uuid::Uuid::nil()),
            ProducerId::new("edge-1").unwrap(),
            Timestamp::UNIX_EPOCH,
        )
    }

    #[test]
    fn holes_open_and_fill() {
        let mut producer = state();
        assert_eq!(producer.receive(1), 0);
        assert_eq!(producer.receive(2), 0);
        assert_eq!(producer.receive(6), 1);
        assert_eq!(producer.missing, vec![(3, 5)]);
        assert_eq!(producer.receive(4), 0);
        assert_eq!(producer.missing, vec![(3, 3), (5, 5)]);
        assert_eq!(producer.receive(4), 0, "a repeat changes nothing");
        assert_eq!((producer.receive(3), producer.receive(5)), (0, 0));
        assert_eq!(
            (producer.missing.clone(), producer.highest, producer.gaps_total),
            (vec![], 6, 1)
        );
    }

    #[test]
    fn the_missing_ranges_stay_bounded() {
        let mut producer = state();
        for n in 0..(MAX_MISSING_RANGES as u64 + 5) {
            producer.receive(2 * n + 2);
        }
        assert_eq!(producer.missing.len(), MAX_MISSING_RANGES);
        assert_eq!(producer.forgotten, 5);
        assert_eq!(producer.missing[0], (11, 11));
    }

    proptest! {
        /// Whatever order numbers arrive in, and whichever are lost, the
        /// missing ranges are exactly the numbers below the highest never received.
        #[test]
        fn missing_is_what_never_arrived(
            received in proptest::collection::vec(1u64..200, 0..300),
        ) {
            let mut producer = state();
            for sequence in &received {
                producer.receive(*sequence);
            }
            let highest = received.iter().copied().max().unwrap_or(0);
            let expected: Vec<u64> = (1..=highest).filter(|n| !received.contains(n)).collect();
            let missing: Vec<u64> = producer.missing.iter().flat_map(|(from, to)| *from..=*to).collect();
            prop_assert_eq!(producer.highest, highest);
            prop_assert_eq!(missing, expected);
        }
    }
}
