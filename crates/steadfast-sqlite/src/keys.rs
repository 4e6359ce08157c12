use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};
use steadfast_core::audit::Actor;
use steadfast_core::{KeyId, Role, Timestamp};
use steadfast_store::audit::drafts;
use steadfast_store::{ApiKeyInfo, KeyStore, NewApiKey, StoreError, StoredKey, TenantScope};

use crate::audit::{append, append_for};
use crate::rows::{millis, optional_timestamp, query_all, timestamp};
use crate::{SqliteStore, sqlite_error};

const INFO_COLUMNS: &str = "key_id, tenant_id, role, name, created_at, revoked_at";

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
    })
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
        };
        let tenant_id = scope.tenant_id().to_string();
        let scope = scope.clone();
        self.writer()
            .write(move |conn| {
                let inserted = conn
                    .execute(
                        "INSERT INTO api_keys (key_id, tenant_id, name, role, secret_hash, created_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                        params![
                            key.key_id.as_str(),
                            tenant_id,
                            key.name,
                            key.role.as_str(),
                            key.secret_hash.as_slice(),
                            millis(now)
                        ],
                    )
                    .map_err(sqlite_error)?;
                if inserted == 0 {
                    return Err(StoreError::AlreadyExists);
                }
                let draft = drafts::key_created(&key.key_id, key.role.as_str(), &key.name);
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
                    "SELECT key_id, tenant_id, role, name, secret_hash, revoked_at FROM api_keys WHERE key_id = ?1",
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
                let revoked = conn
                    .execute(
                        "UPDATE api_keys SET revoked_at = ?2 WHERE key_id = ?1 AND revoked_at IS NULL",
                        params![key_id.as_str(), millis(now)],
                    )
                    .map_err(sqlite_error)?;
                let info = info_by_id(conn, &key_id)?.ok_or(StoreError::NotFound)?;
                if revoked > 0 {
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
}
