//! The tamper-evident audit chain: one append-only, hash-chained sequence of
//! records per tenant.
//!
//! Each record's hash covers its canonical content and the previous record's
//! hash, so editing, removing or moving a record breaks the chain at that
//! point; a signed checkpoint of (sequence, head hash) kept outside the
//! database also exposes a truncated tail. The sequence number is a record's
//! position, not part of its hashed content: that is what lets the verifier
//! tell a moved record (intact, but linked to another predecessor) from an
//! edited one (its hash no longer matches its content).

use std::fmt;

use sha2::{Digest, Sha256};

use crate::{KeyId, TenantId, Timestamp};

pub type Hash = [u8; 32];

/// The `prev_hash` of a chain's first record.
pub const GENESIS: Hash = [0; 32];

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A request authenticated with an API key.
    Key { key_id: KeyId, name: String },
    /// A local operator (the CLI on the data dir or with database credentials).
    Operator,
    /// Steadfast itself (timers, lease expiry, retention).
    System,
    /// A webhook whose signature verified against a source's secret: the
    /// source's id, since the sender holds no API key.
    Source { source_id: String },
}

impl Actor {
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::Key { .. } => "key",
            Actor::Operator => "operator",
            Actor::System => "system",
            Actor::Source { .. } => "source",
        }
    }

    pub fn key_id(&self) -> Option<&KeyId> {
        match self {
            Actor::Key { key_id, .. } => Some(key_id),
            _ => None,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Actor::Key { name, .. } => name,
            Actor::Operator => "operator",
            Actor::System => "system",
            Actor::Source { source_id } => source_id,
        }
    }

    /// The actor stored as its [`kind`](Actor::kind), key id and name. A
    /// kind Steadfast never writes reads as `System`: the record's hash no
    /// longer matches then, so verification names the edited record
    /// instead of failing to read it.
    pub fn decode(kind: &str, key_id: Option<&str>, name: String) -> Result<Actor, BadKeyActor> {
        match kind {
            "key" => {
                let key_id = key_id.and_then(|key_id| KeyId::parse(key_id).ok()).ok_or(BadKeyActor)?;
                Ok(Actor::Key { key_id, name })
            }
            "operator" => Ok(Actor::Operator),
            "source" => Ok(Actor::Source { source_id: name }),
            _ => Ok(Actor::System),
        }
    }
}

/// A stored key actor without a valid key id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an audit record's key actor has no valid key id")]
pub struct BadKeyActor;

/// What a change says about itself, before it takes its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// Dotted, stable names: `job.enqueued`, `step.completed`, `key.revoked`, …
    pub action: &'static str,
    /// What it acted on: a job id, a key id, a tenant name.
    pub target: String,
    /// The job concerned, when there is one (for lineage queries).
    pub job_id: Option<crate::JobId>,
    /// What changed, as JSON text.
    pub summary: String,
}

/// A record in a tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub tenant_id: TenantId,
    pub seq: u64,
    pub at: Timestamp,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub action: String,
    pub target: String,
    pub job_id: Option<crate::JobId>,
    pub summary: String,
    pub prev_hash: Hash,
    pub hash: Hash,
}

fn field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// The hash of a record's canonical content (every field but `seq` and
/// `hash`, each length-prefixed) chained to `prev_hash`.
pub fn record_hash(record: &Record) -> Hash {
    let mut hasher = Sha256::new();
    field(&mut hasher, b"steadfast-audit/v1");
    field(&mut hasher, record.tenant_id.0.as_bytes());
    field(&mut hasher, &record.at.as_millisecond().to_be_bytes());
    field(&mut hasher, record.actor.kind().as_bytes());
    field(&mut hasher, record.actor.key_id().map_or("", |k| k.as_str()).as_bytes());
    field(&mut hasher, record.actor.name().as_bytes());
    field(&mut hasher, record.request_id.as_deref().unwrap_or("").as_bytes());
    field(&mut hasher, record.action.as_bytes());
    field(&mut hasher, record.target.as_bytes());
    match record.job_id {
        Some(id) => field(&mut hasher, id.0.as_bytes()),
        None => field(&mut hasher, b""),
    }
    field(&mut hasher, record.summary.as_bytes());
    field(&mut hasher, &record.prev_hash);
    hasher.finalize().into()
}

/// The chain's current end: the last sequence number and its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: Hash,
}

/// The record that follows `head` (or starts the chain).
pub fn append(
    head: Option<Head>,
    tenant_id: TenantId,
    at: Timestamp,
    actor: Actor,
    request_id: Option<String>,
    draft: Draft,
) -> Record {
    let record = Record {
        tenant_id,
        seq: 0,
        at,
        actor,
        request_id,
        action: draft.action.to_owned(),
        target: draft.target,
        job_id: draft.job_id,
        summary: draft.summary,
        prev_hash: GENESIS,
        hash: [0; 32],
    };
    link(head, record)
}

/// Makes `record` the one that follows `head` (or starts the chain): its
/// content is kept, its `seq`, `prev_hash` and `hash` are set. For stores
/// that take a record's content first and link it into the chain later.
pub fn link(head: Option<Head>, mut record: Record) -> Record {
    (record.seq, record.prev_hash) = head.map_or((1, GENESIS), |head| (head.seq + 1, head.hash));
    record.hash = record_hash(&record);
    record
}

/// What is wrong with a chain, naming the first bad record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Breach {
    /// The record's content no longer matches its hash.
    Edited { seq: u64 },
    /// Sequence numbers jump: records `from..=to` are gone.
    Missing { from: u64, to: u64 },
    /// The record is intact but does not follow its predecessor: records were
    /// moved (or removed and renumbered).
    Reordered { seq: u64 },
    /// The chain ends before a checkpoint someone kept.
    Truncated { checkpoint_seq: u64, last_seq: u64 },
    /// The record at a kept checkpoint has another hash: history was rewritten.
    CheckpointMismatch { seq: u64 },
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Breach::Edited { seq } => write!(f, "record {seq} was edited: its content does not match its hash"),
            Breach::Missing { from, to } if from == to => write!(f, "record {from} is missing"),
            Breach::Missing { from, to } => write!(f, "records {from} to {to} are missing"),
            Breach::Reordered { seq } => {
                write!(
                    f,
                    "record {seq} is out of place: it does not follow record {}",
                    seq.saturating_sub(1)
                )
            }
            Breach::Truncated {
                checkpoint_seq,
                last_seq,
            } => write!(
                f,
                "the log was truncated: a checkpoint vouches for record {checkpoint_seq} but the log ends at {last_seq}"
            ),
            Breach::CheckpointMismatch { seq } => {
                write!(
                    f,
                    "record {seq} differs from the checkpoint that vouches for it: history was rewritten"
                )
            }
        }
    }
}

/// Walks a chain in sequence order and reports the first breach.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// What the next record must follow.
    last: Option<Head>,
    checked: u64,
}

impl Verifier {
    /// Starts at the beginning, or after a pruned prefix whose last record was `base`.
    pub fn new(base: Option<Head>) -> Verifier {
        Verifier { last: base, checked: 0 }
    }

    pub fn check(&mut self, record: &Record) -> Result<(), Breach> {
        let expected_seq = self.last.map_or(1, |head| head.seq + 1);
        let expected_prev = self.last.map_or(GENESIS, |head| head.hash);
        if record.seq > expected_seq {
            return Err(Breach::Missing {
                from: expected_seq,
                to: record.seq - 1,
            });
        }
        if record.seq < expected_seq {
            return Err(Breach::Reordered { seq: record.seq });
        }
        if record_hash(record) != record.hash {
            return Err(Breach::Edited { seq: record.seq });
        }
        if record.prev_hash != expected_prev {
            return Err(Breach::Reordered { seq: record.seq });
        }
        self.last = Some(Head {
            seq: record.seq,
            hash: record.hash,
        });
        self.checked += 1;
        Ok(())
    }

    /// Records checked so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    pub fn head(&self) -> Option<Head> {
        self.last
    }

    /// Ends the walk; `checkpoints` are (seq, hash) pairs someone kept.
    /// `hash_at` looks up the verified hash at a sequence number.
    pub fn finish(self, checkpoints: &[Head], hash_at: impl Fn(u64) -> Option<Hash>) -> Result<Option<Head>, Breach> {
        let last_seq = self.last.map_or(0, |head| head.seq);
        for checkpoint in checkpoints {
            if checkpoint.seq > last_seq {
                return Err(Breach::Truncated {
                    checkpoint_seq: checkpoint.seq,
                    last_seq,
                });
            }
            if let Some(hash) = hash_at(checkpoint.seq)
                && hash != checkpoint.hash
            {
                return Err(Breach::CheckpointMismatch { seq: checkpoint.seq });
            }
        }
        Ok(self.last)
    }
}

/// The message a checkpoint signature covers.
pub fn checkpoint_message(tenant_id: TenantId, head: Head, at: Timestamp) -> Vec<u8> {
    format!(
        "steadfast-audit-checkpoint/v1\n{tenant_id}\n{}\n{}\n{}",
        head.seq,
        hex::encode(head.hash),
        at.as_millisecond()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<Record> {
        let tenant = TenantId(uuid::Uuid::from_u128(7));
        let mut records: Vec<Record> = Vec::new();
        for i in 0..n {
            let head = records.last().map(|r| Head {
                seq: r.seq,
                hash: r.hash,
            });
            let draft = Draft {
                action: "job.enqueued",
                target: format!("job-{i}"),
                job_id: None,
                summary: format!("{{\"i\":{i}}}"),
            };
            let at = Timestamp::from_second(1_800_000_000 + i as i64).unwrap();
            records.push(append(head, tenant, at, Actor::System, None, draft));
        }
        records
    }

    fn verify(records: &[Record], checkpoints: &[Head]) -> Result<Option<Head>, Breach> {
        let mut verifier = Verifier::new(None);
        for record in records {
            verifier.check(record)?;
        }
        verifier.finish(checkpoints, |seq| records.iter().find(|r| r.seq == seq).map(|r| r.hash))
    }

    #[test]
    fn an_intact_chain_verifies() {
        let records = chain(5);
        assert_eq!(verify(&records, &[]).unwrap().unwrap().seq, 5);
    }

    #[test]
    fn each_kind_of_tampering_is_named() {
        let mut edited = chain(5);
        edited[2].summary = "{\"i\":99}".into();
        assert_eq!(verify(&edited, &[]), Err(Breach::Edited { seq: 3 }));

        let mut missing = chain(5);
        missing.remove(2);
        assert_eq!(verify(&missing, &[]), Err(Breach::Missing { from: 3, to: 3 }));

        let mut reordered = chain(5);
        reordered.swap(1, 2);
        let (a, b) = (reordered[1].seq, reordered[2].seq);
        reordered[1].seq = b;
        reordered[2].seq = a;
        assert_eq!(verify(&reordered, &[]), Err(Breach::Reordered { seq: 2 }));

        let full = chain(5);
        let checkpoint = Head {
            seq: 5,
            hash: full[4].hash,
        };
        let truncated = &full[..3];
        assert_eq!(
            verify(truncated, &[checkpoint]),
            Err(Breach::Truncated {
                checkpoint_seq: 5,
                last_seq: 3
            })
        );

        let mut rewritten = chain(5);
        let old = Head {
            seq: 5,
            hash: rewritten[4].hash,
        };
        let head = Head {
            seq: 3,
            hash: rewritten[2].hash,
        };
        let replacement = append(
            Some(head),
            rewritten[3].tenant_id,
            rewritten[3].at,
            Actor::System,
            None,
            Draft {
                action: "job.enqueued",
                target: "forged".into(),
                job_id: None,
                summary: "{}".into(),
            },
        );
        rewritten.truncate(3);
        rewritten.push(replacement.clone());
        let head = Head {
            seq: 4,
            hash: replacement.hash,
        };
        rewritten.push(append(
            Some(head),
            replacement.tenant_id,
            replacement.at,
            Actor::System,
            None,
            Draft {
                action: "job.enqueued",
                target: "forged 2".into(),
                job_id: None,
                summary: "{}".into(),
            },
        ));
        assert_eq!(verify(&rewritten, &[old]), Err(Breach::CheckpointMismatch { seq: 5 }));
    }
}
