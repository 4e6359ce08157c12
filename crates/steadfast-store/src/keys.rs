use async_trait::async_trait;
use steadfast_core::{KeyId, Role, TenantId, Timestamp};

use crate::{StoreError, TenantScope};

/// A key to store: the secret itself never reaches storage, only its hash.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub key_id: KeyId,
    pub name: String,
    pub role: Role,
    pub secret_hash: [u8; 32],
    /// Refused from this time on, like a revoked key.
    pub expires_at: Option<Timestamp>,
}

/// What authentication needs to know about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub key_id: KeyId,
    pub tenant_id: TenantId,
    pub role: Role,
    pub name: String,
    pub secret_hash: Vec<u8>,
    /// Refused from this time on (a revocation may be scheduled: `key rotate --grace`).
    pub revoked_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
}

/// A key as shown to operators (no hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub key_id: KeyId,
    pub tenant_id: TenantId,
    pub role: Role,
    pub name: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    /// When the key last authenticated a request, to [`LAST_USED_RESOLUTION`].
    pub last_used_at: Option<Timestamp>,
}

/// How precisely a key's last use is kept: at most one durable write per
/// key per this interval, whatever the request rate.
pub const LAST_USED_RESOLUTION: std::time::Duration = std::time::Duration::from_secs(60);

#[async_trait]
pub trait KeyStore {
    async fn create_key(&self, scope: &TenantScope, key: NewApiKey, now: Timestamp) -> Result<ApiKeyInfo, StoreError>;
    /// The lookup behind authentication: by the key's public id, across tenants.
    async fn find_key(&self, key_id: &KeyId) -> Result<Option<StoredKey>, StoreError>;
    /// Revokes a key now (a local operator action); revoking twice keeps the
    /// first time, and a revocation scheduled later is brought forward.
    /// `NotFound` for an unknown id.
    async fn revoke_key(&self, key_id: &KeyId, now: Timestamp) -> Result<ApiKeyInfo, StoreError>;
    async fn list_keys(&self, scope: &TenantScope) -> Result<Vec<ApiKeyInfo>, StoreError>;
    /// Notes that `key_id` authenticated a request at `now`, unless its last
    /// use is already noted within [`LAST_USED_RESOLUTION`]. Not durable: a
    /// crash may lose the latest use.
    async fn record_key_use(&self, key_id: &KeyId, now: Timestamp) -> Result<(), StoreError>;
    /// Replaces `key_id` with `new`, as [`crate::decide::rotate_key`]
    /// decides: `new` is created in the same tenant with the same role, and
    /// `key_id` is revoked at `revoke_at` (now, or when a grace period ends).
    /// `NotFound` for an unknown id, `KeyNotActive` for a key already revoked
    /// or expired. Answers (new, old).
    async fn rotate_key(
        &self,
        key_id: &KeyId,
        new: NewApiKey,
        revoke_at: Timestamp,
        now: Timestamp,
    ) -> Result<(ApiKeyInfo, ApiKeyInfo), StoreError>;
}
