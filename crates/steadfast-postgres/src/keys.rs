use async_trait::async_trait;
use steadfast_core::audit::Actor;
use steadfast_core::{KeyId, Role, TenantId, Timestamp};
use steadfast_store::audit::drafts;
use steadfast_store::{ApiKeyInfo, KeyStore, NewApiKey, StoreError, StoredKey, TenantScope};
use tokio_postgres::Row;

use crate::audit::{append, append_for};
use crate::rows::{millis, optional_timestamp, timestamp};
use crate::{Durability, PostgresStore, inserted, pg_error, set_tenant};

fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

/// Reads (key_id, tenant_id, role, name, created_at, revoked_at).
fn info_from_row(row: &Row) -> Result<ApiKeyInfo, StoreError> {
    Ok(ApiKeyInfo {
        key_id: KeyId::parse(row.get(0)).map_err(corrupt)?,
        tenant_id: TenantId(row.get(1)),
        role: row.get::<_, String>(2).parse::<Role>().map_err(corrupt)?,
        name: row.get(3),
        created_at: timestamp(row.get(4))?,
        revoked_at: optional_timestamp(row.get(5))?,
    })
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn create_key(&self, scope: &TenantScope, key: NewApiKey, now: Timestamp) -> Result<ApiKeyInfo, StoreError> {
        self.transaction(Some(scope.tenant_id()), Durability::Durable, async |tx| {
            inserted(
                tx.execute(
                    "INSERT INTO api_keys (tenant_id, key_id, name, role, secret_hash, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &scope.tenant_id().0,
                        &key.key_id.as_str(),
                        &key.name,
                        &key.role.as_str(),
                        &key.secret_hash.as_slice(),
                        &millis(now),
                    ],
                )
                .await,
            )?;
            append_for(
                tx,
                scope,
                now,
                [drafts::key_created(&key.key_id, key.role.as_str(), &key.name)],
            )
            .await
        })
        .await?;
        Ok(ApiKeyInfo {
            key_id: key.key_id,
            tenant_id: scope.tenant_id(),
            role: key.role,
            name: key.name,
            created_at: now,
            revoked_at: None,
        })
    }

    async fn find_key(&self, key_id: &KeyId) -> Result<Option<StoredKey>, StoreError> {
        // Every request authenticates: prepared once per connection, the
        // lookup is one round trip rather than two (parse, then execute).
        let client = self.client().await?;
        let lookup = client
            .prepare_cached("SELECT key_id, tenant_id, role, name, secret_hash, revoked_at FROM steadfast_find_key($1)")
            .await
            .map_err(pg_error)?;
        let row = client.query_opt(&lookup, &[&key_id.as_str()]).await.map_err(pg_error)?;
        row.map(|row| {
            Ok(StoredKey {
                key_id: KeyId::parse(row.get(0)).map_err(corrupt)?,
                tenant_id: TenantId(row.get(1)),
                role: row.get::<_, String>(2).parse::<Role>().map_err(corrupt)?,
                name: row.get(3),
                secret_hash: row.get(4),
                revoked_at: optional_timestamp(row.get(5))?,
            })
        })
        .transpose()
    }

    async fn revoke_key(&self, key_id: &KeyId, now: Timestamp) -> Result<ApiKeyInfo, StoreError> {
        self.transaction(None, Durability::Durable, async |tx| {
            let row = tx
                .query_opt(
                    "SELECT key_id, tenant_id, role, name, created_at, revoked_at FROM steadfast_revoke_key($1, $2)",
                    &[&key_id.as_str(), &millis(now)],
                )
                .await
                .map_err(pg_error)?;
            let info = info_from_row(&row.ok_or(StoreError::NotFound)?)?;
            if info.revoked_at == Some(now) {
                set_tenant(tx, info.tenant_id).await?;
                append(
                    tx,
                    info.tenant_id,
                    &Actor::Operator,
                    None,
                    now,
                    [drafts::key_revoked(key_id)],
                )
                .await?;
            }
            Ok(info)
        })
        .await
    }

    async fn list_keys(&self, scope: &TenantScope) -> Result<Vec<ApiKeyInfo>, StoreError> {
        self.transaction(Some(scope.tenant_id()), Durability::Durable, async |tx| {
            let rows = tx
                .query(
                    "SELECT key_id, tenant_id, role, name, created_at, revoked_at FROM api_keys \
                     WHERE tenant_id = $1 ORDER BY created_at, key_id",
                    &[&scope.tenant_id().0],
                )
                .await
                .map_err(pg_error)?;
            rows.iter().map(info_from_row).collect()
        })
        .await
    }
}
