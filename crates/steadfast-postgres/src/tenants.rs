use async_trait::async_trait;
use steadfast_core::audit::Actor;
use steadfast_core::{TenantId, TenantName, Timestamp};
use steadfast_store::audit::drafts;
use steadfast_store::{StoreError, Tenant, TenantStore};
use tokio_postgres::Row;

use crate::audit::append;
use crate::rows::{millis, timestamp};
use crate::{Durability, PostgresStore, inserted, pg_error};

fn tenant_from_row(row: &Row) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: TenantId(row.get(0)),
        name: TenantName::new(row.get::<_, String>(1)).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        created_at: timestamp(row.get(2))?,
    })
}

#[async_trait]
impl TenantStore for PostgresStore {
    async fn create_tenant(&self, id: TenantId, name: &TenantName, now: Timestamp) -> Result<Tenant, StoreError> {
        self.transaction(Some(id), Durability::Durable, async |tx| {
            inserted(
                tx.execute(
                    "INSERT INTO tenants (tenant_id, name, created_at) VALUES ($1, $2, $3)",
                    &[&id.0, &name.as_str(), &millis(now)],
                )
                .await,
            )?;
            append(
                tx,
                id,
                &Actor::Operator,
                None,
                now,
                [drafts::tenant_created(name.as_str())],
            )
            .await?;
            Ok(Tenant {
                id,
                name: name.clone(),
                created_at: now,
            })
        })
        .await
    }

    async fn tenant_by_name(&self, name: &TenantName) -> Result<Option<Tenant>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT tenant_id, name, created_at FROM steadfast_tenants() WHERE name = $1",
                &[&name.as_str()],
            )
            .await
            .map_err(pg_error)?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT tenant_id, name, created_at FROM steadfast_tenants()", &[])
            .await
            .map_err(pg_error)?;
        rows.iter().map(tenant_from_row).collect()
    }
}
