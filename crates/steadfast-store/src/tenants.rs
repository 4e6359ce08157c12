use async_trait::async_trait;
use steadfast_core::{TenantId, TenantName, Timestamp};

use crate::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: TenantName,
    pub created_at: Timestamp,
}

/// Tenants. Not tenant-scoped: only local operators reach these.
#[async_trait]
pub trait TenantStore {
    /// `AlreadyExists` if the name is taken.
    async fn create_tenant(&self, id: TenantId, name: &TenantName, now: Timestamp) -> Result<Tenant, StoreError>;
    async fn tenant_by_name(&self, name: &TenantName) -> Result<Option<Tenant>, StoreError>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;
}
