use async_trait::async_trait;
use steadfast_core::audit::Actor;
use steadfast_core::{KeyId, Role, TenantId, Timestamp};
use steadfast_store::audit::drafts;
use steadfast_store::decide;
use steadfast_store::{ApiKeyInfo, KeyStore, LAST_USED_RESOLUTION, NewApiKey, StoreError, StoredKey, TenantScope};
use tokio_postgres::Row;

use crate::audit::{append, append_for};
use crate::rows::{millis, optional_timestamp, timestamp};
use crate::{Durability, PostgresStore, Transaction, inserted, pg_error, set_tenant, statement};

fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

/// The columns [`info_from_row`] reads, in order.
const INFO_COLUMNS: &str = "key_id, tenant_id, role, name, created_at, revoked_at, expires_at, last_used_at";

fn info_from_row(row: &Row) -> Result<ApiKeyInfo, StoreError> {
    Ok(ApiKeyInfo {
        key_id: KeyId::parse(row.get(0)).map_err(corrupt)?,
        tenant_id: TenantId(row.get(1)),
        role: row.get::<_, String>(2).parse::<Role>().map_err(corrupt)?,
        name: row.get(3),
        created_at: timestamp(row.get(4))?,
        revoked_at: optional_timestamp(row.get(5))?,
        expires_at: optional_timestamp(row.get(6))?,
        last_used_at: optional_timestamp(row.get(7))?,
    })
}

async fn insert_key(tx: &Transaction, tenant: TenantId, key: &NewApiKey, now: Timestamp) -> Result<(), StoreError> {
    inserted(
        tx.execute(
            "INSERT INTO api_keys (tenant_id, key_id, name, role, secret_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &tenant.0,
                &key.key_id.as_str(),
                &key.name,
                &key.role.as_str(),
                &key.secret_hash.as_slice(),
                &millis(now),
                &key.expires_at.map(millis),
            ],
        )
        .await,
    )?;
    Ok(())
}

/// Revokes `key_id` at `at` (never later than a revocation already
/// scheduled), across tenants; the key as it is now, and whether that
/// changed it.
/// Serialises the operator actions on one key (revoke, rotate) across
/// nodes and CLI runs, so a rotation never reads a key a concurrent
/// revocation is ending.
async fn lock_key(tx: &Transaction, key_id: &KeyId) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('steadfast.key:' || $1))",
        &[&key_id.as_str()],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

async fn revoke_at(tx: &Transaction, key_id: &KeyId, at: Timestamp) -> Result<(ApiKeyInfo, bool), StoreError> {
    let row = tx
        .query_opt(
            &format!("SELECT {INFO_COLUMNS}, changed FROM steadfast_revoke_key_at($1, $2)"),
            &[&key_id.as_str(), &millis(at)],
        )
        .await
        .map_err(pg_error)?
        .ok_or(StoreError::NotFound)?;
    Ok((info_from_row(&row)?, row.get(8)))
}

/// A key by id, across tenants.
async fn key_by_id(tx: &Transaction, key_id: &KeyId) -> Result<Option<ApiKeyInfo>, StoreError> {
    let row = tx
        .query_opt(
            &format!("SELECT {INFO_COLUMNS} FROM steadfast_key_by_id($1)"),
            &[&key_id.as_str()],
        )
        .await
        .map_err(pg_error)?;
    row.as_ref().map(info_from_row).transpose()
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn create_key(&self, scope: &TenantScope, key: NewApiKey, now: Timestamp) -> Result<ApiKeyInfo, StoreError> {
        self.transaction(Some(scope.tenant_id()), Durability::Durable, async |tx| {
            insert_key(tx, scope.tenant_id(), &key, now).await?;
            let draft = drafts::key_created_with(&key.key_id, key.role.as_str(), &key.name, key.expires_at, None);
            append_for(tx, scope, now, [draft]).await
        })
        .await?;
        Ok(ApiKeyInfo {
            key_id: key.key_id,
            tenant_id: scope.tenant_id(),
            role: key.role,
            name: key.name,
            created_at: now,
            revoked_at: None,
            expires_at: key.expires_at,
            last_used_at: None,
        })
    }

    async fn find_key(&self, key_id: &KeyId) -> Result<Option<StoredKey>, StoreError> {
        // Every request authenticates: prepared once per connection, the
        // lookup is one round trip rather than two (parse, then execute).
        let client = self.client().await?;
        let lookup = client
            .prepare_cached(
                "SELECT key_id, tenant_id, role, name, secret_hash, revoked_at, expires_at FROM steadfast_key_by_id($1)",
            )
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
                expires_at: optional_timestamp(row.get(6))?,
            })
        })
        .transpose()
    }

    async fn revoke_key(&self, key_id: &KeyId, now: Timestamp) -> Result<ApiKeyInfo, StoreError> {
        self.transaction(None, Durability::Durable, async |tx| {
            lock_key(tx, key_id).await?;
            let (info, changed) = revoke_at(tx, key_id, now).await?;
            if changed {
                set_tenant(tx, info.tenant_id).await?;
                let draft = drafts::key_revoked(key_id);
                append(tx, info.tenant_id, &Actor::Operator, None, now, [draft]).await?;
            }
            Ok(info)
        })
        .await
    }

    async fn list_keys(&self, scope: &TenantScope) -> Result<Vec<ApiKeyInfo>, StoreError> {
        self.transaction(Some(scope.tenant_id()), Durability::Durable, async |tx| {
            let rows = tx
                .query(
                    &format!("SELECT {INFO_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, key_id"),
                    &[&scope.tenant_id().0],
                )
                .await
                .map_err(pg_error)?;
            rows.iter().map(info_from_row).collect()
        })
        .await
    }

    async fn record_key_use(&self, key_id: &KeyId, now: Timestamp) -> Result<(), StoreError> {
        let every = LAST_USED_RESOLUTION.as_millis() as i64;
        self.transaction(None, Durability::Relaxed, async |tx| {
            tx.execute(
                &statement(tx, "SELECT steadfast_key_used($1, $2, $3)").await?,
                &[&key_id.as_str(), &millis(now), &every],
            )
            .await
            .map_err(pg_error)?;
            Ok(())
        })
        .await
    }

    async fn rotate_key(
        &self,
        key_id: &KeyId,
        new: NewApiKey,
        revoke_at_time: Timestamp,
        now: Timestamp,
    ) -> Result<(ApiKeyInfo, ApiKeyInfo), StoreError> {
        self.transaction(None, Durability::Durable, async |tx| {
            lock_key(tx, key_id).await?;
            let old = key_by_id(tx, key_id).await?.ok_or(StoreError::NotFound)?;
            let rotation = decide::rotate_key(&old, &new, revoke_at_time, now)?;
            set_tenant(tx, old.tenant_id).await?;
            insert_key(tx, old.tenant_id, &rotation.insert, now).await?;
            let (old, _) = revoke_at(tx, key_id, rotation.old_revoked_at).await?;
            for (tenant, draft) in rotation.audit {
                append(tx, tenant, &Actor::Operator, None, now, [draft]).await?;
            }
            Ok((rotation.new, old))
        })
        .await
    }
}
