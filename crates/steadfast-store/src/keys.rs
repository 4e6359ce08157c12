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
}

/// What authentication needs to know about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub key_id: KeyId,
    pub tenant_id: TenantId,
    pub role: Role,
    pub name: String,
    pub secret_hash: Vec<u8>,
    pub revoked_at: Option<Timestamp>,
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
}

#[async_trait]
pub trait KeyStore {
    async fn create_key(&self, scope: &TenantScope, key: NewApiKey, now: Timestamp) -> Result<ApiKeyInfo, StoreError>;
    /// The lookup behind authentication: by the key's public id, across tenants.
    async fn find_key(&self, key_id: &KeyId) -> Result<Option<StoredKey>, StoreError>;
    /// Revokes a key (a local operator action); revoking twice keeps the first time.
    /// `NotFound` for an unknown id.
    async fn revoke_key(&self, key_id: &KeyId, now: Timestamp) -> Result<ApiKeyInfo, StoreError>;
    async fn list_keys(&self, scope: &TenantScope) -> Result<Vec<ApiKeyInfo>, StoreError>;
}
