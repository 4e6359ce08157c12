use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};
use steadfast_core::audit::Actor;
use steadfast_core::{KeyId, Role, TenantId, Timestamp};
use steadfast_store::audit::drafts;
use steadfast_store::decide;
use steadfast_store::{ApiKeyInfo, KeyStore, LAST_USED_RESOLUTION, NewApiKey, StoreError, StoredKey, TenantScope};

use crate::audit::{append, append_for};
use crate::rows::{millis, optional_timestamp, query_all, timestamp};
use crate::writer::Durability;
use crate::{SqliteStore, sqlite_error};

const INFO_COLUMNS: &str = "key_id, tenant_id, role, name, created_at, revoked_at, expires_at, last_used_at";

fn text_error(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

fn info_from_row(row: &Row<'_>) -> rusqlite::Result<ApiKeyInfo> {
    Ok(ApiKeyInfo {
        key_id: KeyId::parse(&row.get::<_, String>(0)?).map_err(text_error)?,
        tenant_id: row.get::<_, String>(1)?.parse().map_err(text_error)?,
        role: row.get::<_, String>(2)?.parse::<Role>().map_err(text_error)?,
        name: row.get(3)?,
        created_at: timestamp(row.get(4)?)?,
        revoked_at: optional_timestamp(row.get(5)?)?,
        expires_at: optional_timestamp(row.get(6)?)?,
        last_used_at: optional_timestamp(row.get(7)?)?,
    })
}

fn insert_key(
    conn: &rusqlite::Connection,
    tenant_id: TenantId,
    key: &NewApiKey,
    now: Timestamp,
) -> Result<(), StoreError> {
    let inserted = conn
        .execute(
            "INSERT INTO api_keys (key_id, tenant_id, name, role, secret_hash, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
            params![
                key.key_id.as_str(),
                tenant_id.to_string(),
                key.name,
                key.role.as_str(),
                key.secret_hash.as_slice(),
                millis(now),
                key.expires_at.map(millis)
            ],
        )
        .map_err(sqlite_error)?;
    if inserted == 0 {
        return Err(StoreError::AlreadyExists);
    }
    Ok(())
}

/// Revokes `key_id` at `at`, never later than a revocation already
/// scheduled; whether that changed anything.
fn revoke_at(conn: &rusqlite::Connection, key_id: &KeyId, at: Timestamp) -> Result<bool, StoreError> {
    let changed = conn
        .execute(
            "UPDATE api_keys SET revoked_at = ?2 WHERE key_id = ?1 AND (revoked_at IS NULL OR revoked_at > ?2)",
            params![key_id.as_str(), millis(at)],
        )
        .map_err(sqlite_error)?;
    Ok(changed > 0)
}

fn info_by_id(conn: &rusqlite::Connection, key_id: &KeyId) -> Result<Option<ApiKeyInfo>, StoreError> {
    conn.query_row(
        &format!("SELECT {INFO_COLUMNS} FROM api_keys WHERE key_id = ?1"),
        [key_id.as_str()],
        info_from_row,
    )
    .optional()
    .map_err(sqlite_error)
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn create_key(&self, scope: &TenantScope, key: NewApiKey, now: Timestamp) -> Result<ApiKeyInfo, StoreError> {
        let info = ApiKeyInfo {
            key_id: key.key_id.clone(),
            tenant_id: scope.tenant_id(),
            role: key.role,
            name: key.name.clone(),
            created_at: now,
            revoked_at: None,
            expires_at: key.expires_at,
            last_used_at: None,
        };
        let scope = scope.clone();
        self.writer()
            .write(move |conn| {
                insert_key(conn, scope.tenant_id(), &key, now)?;
                let draft = drafts::key_created_with(&key.key_id, key.role.as_str(), &key.name, key.expires_at, None);
                append_for(conn, &scope, now, [draft])
            })
            .await?;
        Ok(info)
    }

    async fn find_key(&self, key_id: &KeyId) -> Result<Option<StoredKey>, StoreError> {
        let key_id = key_id.clone();
        self.readers()
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT key_id, tenant_id, role, name, secret_hash, revoked_at, expires_at FROM api_keys WHERE key_id = ?1",
                )
                .and_then(|mut select| {
                    select
                        .query_row([key_id.as_str()], |row| {
                            Ok(StoredKey {
                                key_id: KeyId::parse(&row.get::<_, String>(0)?).map_err(text_error)?,
                                tenant_id: row.get::<_, String>(1)?.parse().map_err(text_error)?,
                                role: row.get::<_, String>(2)?.parse::<Role>().map_err(text_error)?,
                                name: row.get(3)?,
                                secret_hash: row.get(4)?,
                                revoked_at: optional_timestamp(row.get(5)?)?,
                                expires_at: optional_timestamp(row.get(6)?)?,
                            })
                        })
                        .optional()
                })
                .map_err(sqlite_error)
            })
            .await
    }

    async fn revoke_key(&self, key_id: &KeyId, now: Timestamp) -> Result<ApiKeyInfo, StoreError> {
        let key_id = key_id.clone();
        self.writer()
            .write(move |conn| {
                let revoked = revoke_at(conn, &key_id, now)?;
                let info = info_by_id(conn, &key_id)?.ok_or(StoreError::NotFound)?;
                if revoked {
                    append(
                        conn,
                        info.tenant_id,
                        &Actor::Operator,
                        None,
                        now,
                        [drafts::key_revoked(&key_id)],
                    )?;
                }
                Ok(info)
            })
            .await
    }

    async fn list_keys(&self, scope: &TenantScope) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let tenant_id = scope.tenant_id().to_string();
        self.readers()
            .read(move |conn| {
                let sql =
                    format!("SELECT {INFO_COLUMNS} FROM api_keys WHERE tenant_id = ?1 ORDER BY created_at, key_id");
                query_all(conn, &sql, [tenant_id], info_from_row)
            })
            .await
    }

    async fn record_key_use(&self, key_id: &KeyId, now: Timestamp) -> Result<(), StoreError> {
        let key_id = key_id.clone();
        let every = LAST_USED_RESOLUTION.as_millis() as i64;
        self.writer()
            .send(Durability::Relaxed, move |conn| {
                conn.prepare_cached(
                    "UPDATE api_keys SET last_used_at = ?2 \
                     WHERE key_id = ?1 AND (last_used_at IS NULL OR last_used_at <= ?2 - ?3)",
                )
                .and_then(|mut update| update.execute(params![key_id.as_str(), millis(now), every]))
                .map_err(sqlite_error)?;
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
        let key_id = key_id.clone();
        self.writer()
            .write(move |conn| {
                let old = info_by_id(conn, &key_id)?.ok_or(StoreError::NotFound)?;
                let rotation = decide::rotate_key(&old, &new, revoke_at_time, now)?;
                insert_key(conn, old.tenant_id, &rotation.insert, now)?;
                revoke_at(conn, &key_id, rotation.old_revoked_at)?;
                for (tenant, draft) in rotation.audit {
                    append(conn, tenant, &Actor::Operator, None, now, [draft])?;
                }
                let old = info_by_id(conn, &key_id)?.ok_or(StoreError::NotFound)?;
                Ok((rotation.new, old))
            })
            .await
    }
}
