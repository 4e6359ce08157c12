use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};
use steadfast_core::audit::Actor;
use steadfast_core::{TenantId, TenantName, Timestamp};
use steadfast_store::audit::drafts;
use steadfast_store::{StoreError, Tenant, TenantStore};

use crate::audit::append;
use crate::rows::{millis, query_all, timestamp};
use crate::{SqliteStore, sqlite_error};

fn tenant_from_row(row: &Row<'_>) -> rusqlite::Result<Tenant> {
    let conversion = |e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e)
    };
    Ok(Tenant {
        id: row
            .get::<_, String>(0)?
            .parse()
            .map_err(|e: uuid::Error| conversion(e.into()))?,
        name: TenantName::new(row.get::<_, String>(1)?).map_err(|e| conversion(e.into()))?,
        created_at: timestamp(row.get(2)?)?,
    })
}

#[async_trait]
impl TenantStore for SqliteStore {
    async fn create_tenant(&self, id: TenantId, name: &TenantName, now: Timestamp) -> Result<Tenant, StoreError> {
        let tenant = Tenant {
            id,
            name: name.clone(),
            created_at: now,
        };
        let row = tenant.clone();
        self.writer()
            .write(move |conn| {
                let inserted = conn
                    .execute(
                        "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                        params![row.id.to_string(), row.name.as_str(), millis(row.created_at)],
                    )
                    .map_err(sqlite_error)?;
                if inserted == 0 {
                    return Err(StoreError::AlreadyExists);
                }
                let draft = drafts::tenant_created(row.name.as_str());
                append(conn, row.id, &Actor::Operator, None, now, [draft])
            })
            .await?;
        Ok(tenant)
    }

    async fn tenant_by_name(&self, name: &TenantName) -> Result<Option<Tenant>, StoreError> {
        let name = name.clone();
        self.readers()
            .read(move |conn| {
                conn.query_row(
                    "SELECT id, name, created_at FROM tenants WHERE name = ?1",
                    [name.as_str()],
                    tenant_from_row,
                )
                .optional()
                .map_err(sqlite_error)
            })
            .await
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.readers()
            .read(|conn| {
                query_all(
                    conn,
                    "SELECT id, name, created_at FROM tenants ORDER BY name",
                    [],
                    tenant_from_row,
                )
            })
            .await
    }
}
