//! Signed checkpoints of audit chains. The signing key lives outside the
//! database (a file, or an environment variable), so whoever can rewrite
//! the database cannot forge a checkpoint; its public key is registered in
//! the database, so every node uses the same one and a checkpoint names a
//! key the deployment knows.

use std::sync::Arc;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use steadfast_core::audit::{Head, checkpoint_message};
use steadfast_core::{TenantId, Timestamp};
use steadfast_protocol::AuditCheckpoint;

/// An Ed25519 key that signs audit checkpoints.
#[derive(Clone)]
pub struct AuditSigner {
    key: Arc<SigningKey>,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSigner")
            .field("public_key", &self.public_key_hex())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("the checkpoint is not signed with the expected algorithm ({0})")]
    Algorithm(String),
    #[error("the checkpoint's {0} is malformed")]
    Malformed(&'static str),
    #[error("the checkpoint's signature does not verify: it was altered or forged")]
    BadSignature,
    #[error(
        "the checkpoint was signed by key {found}, which this deployment never registered \
         (its keys: {registered})"
    )]
    UnknownKey { found: String, registered: String },
}

impl AuditSigner {
    pub fn from_seed(seed: [u8; 32]) -> AuditSigner {
        AuditSigner {
            key: Arc::new(SigningKey::from_bytes(&seed)),
        }
    }

    /// Parses the key file's content: 64 hex digits.
    pub fn from_hex(text: &str) -> Option<AuditSigner> {
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed).ok()?;
        Some(AuditSigner::from_seed(seed))
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }

    pub fn sign(&self, tenant_id: TenantId, head: Head, at: Timestamp) -> AuditCheckpoint {
        let signature = self.key.sign(&checkpoint_message(tenant_id, head, at));
        AuditCheckpoint {
            tenant_id: tenant_id.0,
            seq: head.seq,
            hash: hex::encode(head.hash),
            at,
            algorithm: "ed25519".into(),
            public_key: self.public_key_hex(),
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

/// Checks a checkpoint's signature, and that one of `registered` (public
/// keys, hex: the deployment's signing keys, current or retired) made it;
/// returns the (seq, hash) it vouches for.
pub fn verify_checkpoint(checkpoint: &AuditCheckpoint, registered: &[String]) -> Result<Head, CheckpointError> {
    if checkpoint.algorithm != "ed25519" {
        return Err(CheckpointError::Algorithm(checkpoint.algorithm.clone()));
    }
    if !registered.contains(&checkpoint.public_key) {
        return Err(CheckpointError::UnknownKey {
            found: checkpoint.public_key.clone(),
            registered: if registered.is_empty() {
                "none".to_owned()
            } else {
                registered.join(", ")
            },
        });
    }
    let mut public = [0u8; 32];
    hex::decode_to_slice(&checkpoint.public_key, &mut public).map_err(|_| CheckpointError::Malformed("public_key"))?;
    let key = VerifyingKey::from_bytes(&public).map_err(|_| CheckpointError::Malformed("public_key"))?;
    let mut signature = [0u8; 64];
    hex::decode_to_slice(&checkpoint.signature, &mut signature).map_err(|_| CheckpointError::Malformed("signature"))?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&checkpoint.hash, &mut hash).map_err(|_| CheckpointError::Malformed("hash"))?;
    let head = Head {
        seq: checkpoint.seq,
        hash,
    };
    let message = checkpoint_message(TenantId(checkpoint.tenant_id), head, checkpoint.at);
    key.verify(&message, &Signature::from_bytes(&signature))
        .map_err(|_| CheckpointError::BadSignature)?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_checkpoint_verifies_and_any_change_breaks_it() {
        let signer = AuditSigner::from_seed([7; 32]);
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let checkpoint = signer.sign(TenantId(uuid::Uuid::from_u128(1)), Head { seq: 9, hash: [3; 32] }, at);
        let registered = [signer.public_key_hex()];
        assert_eq!(verify_checkpoint(&checkpoint, &registered).unwrap().seq, 9);
        let moved_back = AuditCheckpoint {
            seq: 8,
            ..checkpoint.clone()
        };
        assert!(matches!(
            verify_checkpoint(&moved_back, &registered),
            Err(CheckpointError::BadSignature)
        ));
        let other = AuditSigner::from_seed([8; 32]);
        let forged = other.sign(TenantId(uuid::Uuid::from_u128(1)), Head { seq: 9, hash: [3; 32] }, at);
        assert!(matches!(
            verify_checkpoint(&forged, &registered),
            Err(CheckpointError::UnknownKey { .. })
        ));
        // A retired key still verifies what it signed.
        let both = [other.public_key_hex(), signer.public_key_hex()];
        assert_eq!(verify_checkpoint(&forged, &both).unwrap().seq, 9);
    }
}
