//! Which audit signing key a deployment uses: one at a time, registered in
//! the database so every node signs with the same key and an operator can
//! say which key signed any checkpoint. Keys are never removed: a retired
//! key still verifies the checkpoints it signed.

use serde_json::json;
use steadfast_core::Timestamp;
use steadfast_core::audit::{Actor, Draft};

/// A registered public key. The one with the highest `position` is current;
/// every other is retired (from its successor's `registered_at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub position: i64,
    /// Ed25519 public key, hex.
    pub public_key: String,
    pub registered_at: Timestamp,
}

/// Why a key is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    /// A node starts with this key: registered if none is yet, otherwise it
    /// must be the current one.
    Start,
    /// An operator replaces the current key (`steadfast audit rotate-key`).
    Rotate,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningKeyRefused {
    #[error(
        "this deployment's audit checkpoints are signed with key {current}, not {presented}; \
         give every node the same key, or replace it on purpose with `steadfast audit rotate-key`"
    )]
    NotCurrent { current: String, presented: String },
    #[error(
        "audit signing key {presented} was retired at {retired_at} (the current key is {current}); \
         it still verifies old checkpoints but signs no new ones"
    )]
    Retired {
        presented: String,
        current: String,
        retired_at: Timestamp,
    },
    #[error("audit signing key {0} is already the current key; nothing to rotate")]
    AlreadyCurrent(String),
}

/// A key to register: its position, and the audit record saying so
/// (written to the system chain, by `actor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSigningKey {
    pub record: SigningKeyRecord,
    pub actor: Actor,
    pub draft: Draft,
}

/// Decides what presenting `public_key` means, given the keys registered
/// (in position order): nothing to write, a key to register, or a refusal.
pub fn register_signing_key(
    registered: &[SigningKeyRecord],
    public_key: &str,
    change: KeyChange,
    now: Timestamp,
) -> Result<Option<NewSigningKey>, SigningKeyRefused> {
    let current = registered.last();
    let previous = registered.iter().position(|key| key.public_key == public_key);
    match (change, current, previous) {
        (KeyChange::Start, Some(current), Some(_)) if current.public_key == public_key => Ok(None),
        (KeyChange::Rotate, Some(current), Some(_)) if current.public_key == public_key => {
            Err(SigningKeyRefused::AlreadyCurrent(public_key.to_owned()))
        }
        (_, Some(current), Some(index)) => Err(SigningKeyRefused::Retired {
            presented: public_key.to_owned(),
            current: current.public_key.clone(),
            retired_at: registered[index + 1].registered_at,
        }),
        (KeyChange::Start, Some(current), None) => Err(SigningKeyRefused::NotCurrent {
            current: current.public_key.clone(),
            presented: public_key.to_owned(),
        }),
        (_, current, _) => {
            let record = SigningKeyRecord {
                position: current.map_or(1, |key| key.position + 1),
                public_key: public_key.to_owned(),
                registered_at: now,
            };
            let draft = Draft {
                action: "audit.key_registered",
                target: public_key.to_owned(),
                job_id: None,
                summary: json!({
                    "public_key": public_key,
                    "position": record.position,
                    "replaces": current.map(|key| key.public_key.as_str()),
                })
                .to_string(),
            };
            let actor = match change {
                KeyChange::Start => Actor::System,
                KeyChange::Rotate => Actor::Operator,
            };
            Ok(Some(NewSigningKey { record, actor, draft }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn registered(keys: &[&str]) -> Vec<SigningKeyRecord> {
        keys.iter()
            .enumerate()
            .map(|(index, key)| SigningKeyRecord {
                position: index as i64 + 1,
                public_key: (*key).to_owned(),
                registered_at: at(index as i64),
            })
            .collect()
    }

    #[test]
    fn the_first_key_is_registered_and_then_only_it_starts() {
        let first = register_signing_key(&[], "a", KeyChange::Start, at(0))
            .unwrap()
            .unwrap();
        assert_eq!((first.record.position, first.actor), (1, Actor::System));
        assert_eq!(first.draft.action, "audit.key_registered");

        let keys = registered(&["a"]);
        assert_eq!(register_signing_key(&keys, "a", KeyChange::Start, at(1)), Ok(None));
        assert!(matches!(
            register_signing_key(&keys, "b", KeyChange::Start, at(1)),
            Err(SigningKeyRefused::NotCurrent { .. })
        ));
    }

    #[test]
    fn rotation_registers_a_new_key_and_retires_the_old_for_good() {
        let keys = registered(&["a"]);
        let rotated = register_signing_key(&keys, "b", KeyChange::Rotate, at(5))
            .unwrap()
            .unwrap();
        assert_eq!((rotated.record.position, rotated.actor), (2, Actor::Operator));
        assert!(rotated.draft.summary.contains(r#""replaces":"a""#));

        let keys = registered(&["a", "b"]);
        assert_eq!(register_signing_key(&keys, "b", KeyChange::Start, at(6)), Ok(None));
        for change in [KeyChange::Start, KeyChange::Rotate] {
            assert_eq!(
                register_signing_key(&keys, "a", change, at(6)),
                Err(SigningKeyRefused::Retired {
                    presented: "a".into(),
                    current: "b".into(),
                    retired_at: at(1)
                })
            );
        }
        assert_eq!(
            register_signing_key(&keys, "b", KeyChange::Rotate, at(6)),
            Err(SigningKeyRefused::AlreadyCurrent("b".into()))
        );
    }
}
