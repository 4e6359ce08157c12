//! Payload schema versions (see `steadfast_store::schemas`).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use steadfast_core::{QueueName, TenantId, Timestamp};
use steadfast_store::decide::{self, Author, Decision};
use steadfast_store::schemas::{PayloadSchema, Registered, SchemaHead, SchemaRegistration, SchemaStore};
use steadfast_store::{StoreError, TenantScope};

use crate::rows::{millis, parsed, query_all, timestamp};
use crate::writer::Durability;
use crate::{SqliteStore, sqlite_error};

const COLUMNS: &str = "queue, version, schema, output_schema, forced, reason, created_at";

fn schema_from_row(row: &Row<'_>) -> rusqlite::Result<PayloadSchema> {
    Ok(PayloadSchema {
        queue: parsed(row.get(0)?, QueueName::new)?,
        version: row.get(1)?,
        schema: row.get(2)?,
        output_schema: row.get(3)?,
        forced: row.get(4)?,
        reason: row.get(5)?,
        created_at: timestamp(row.get(6)?)?,
    })
}

fn load_version(
    conn: &Connection,
    tenant: TenantId,
    queue: &QueueName,
    version: Option<u32>,
) -> Result<Option<PayloadSchema>, StoreError> {
    let sql = match version {
        Some(_) => format!("SELECT {COLUMNS} FROM queue_schemas WHERE tenant_id = ?1 AND queue = ?2 AND version = ?3"),
        // The newest.
        None => format!(
            "SELECT {COLUMNS} FROM queue_schemas WHERE tenant_id = ?1 AND queue = ?2 AND ?3 IS NULL \
             ORDER BY version DESC LIMIT 1"
        ),
    };
    conn.prepare_cached(&sql)
        .and_then(|mut select| {
            select
                .query_row(params![tenant.to_string(), queue.as_str(), version], schema_from_row)
                .optional()
        })
        .map_err(sqlite_error)
}

#[async_trait]
impl SchemaStore for SqliteStore {
    async fn register_schema(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        registration: SchemaRegistration,
        now: Timestamp,
    ) -> Result<Registered, StoreError> {
        let (tenant, queue) = (scope.tenant_id(), queue.clone());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let same_version = load_version(conn, tenant, &queue, Some(registration.version))?;
            let latest = load_version(conn, tenant, &queue, None)?;
            let kept: i64 = conn
                .prepare_cached("SELECT count(*) FROM queue_schemas WHERE tenant_id = ?1")
                .and_then(|mut count| count.query_row(params![tenant.to_string()], |row| row.get(0)))
                .map_err(sqlite_error)?;
            let (registered, draft) =
                decide::register_schema(&queue, same_version, latest, kept as usize, registration, now)?;
            if let Registered::Created(schema) = &registered {
                conn.prepare_cached(
                    "INSERT INTO queue_schemas (tenant_id, queue, version, schema, output_schema, forced, reason, \
                     created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .and_then(|mut insert| {
                    insert.execute(params![
                        tenant.to_string(),
                        schema.queue.as_str(),
                        schema.version,
                        schema.schema,
                        schema.output_schema,
                        schema.forced,
                        schema.reason,
                        millis(schema.created_at),
                    ])
                })
                .map_err(sqlite_error)?;
            }
            let mut decision = Decision::read_only(registered);
            decision.writes.audit.extend(draft.map(|draft| (tenant, draft)));
            Ok(decision)
        })
        .await
    }

    async fn schemas(&self, scope: &TenantScope, queue: Option<&QueueName>) -> Result<Vec<PayloadSchema>, StoreError> {
        let (tenant, queue) = (scope.tenant_id(), queue.cloned());
        self.readers()
            .read(move |conn| {
                query_all(
                    conn,
                    &format!(
                        "SELECT {COLUMNS} FROM queue_schemas WHERE tenant_id = ?1 AND (?2 IS NULL OR queue = ?2) \
                         ORDER BY queue, version"
                    ),
                    params![tenant.to_string(), queue.as_ref().map(QueueName::as_str)],
                    schema_from_row,
                )
            })
            .await
    }

    async fn schema(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        version: u32,
    ) -> Result<Option<PayloadSchema>, StoreError> {
        let (tenant, queue) = (scope.tenant_id(), queue.clone());
        self.readers()
            .read(move |conn| load_version(conn, tenant, &queue, Some(version)))
            .await
    }

    async fn schema_heads(&self, scope: &TenantScope) -> Result<Vec<SchemaHead>, StoreError> {
        let tenant = scope.tenant_id();
        self.readers()
            .read(move |conn| {
                query_all(
                    conn,
                    "SELECT queue, max(version), max(output_schema IS NOT NULL) FROM queue_schemas \
                     WHERE tenant_id = ?1 GROUP BY queue ORDER BY queue",
                    params![tenant.to_string()],
                    |row| {
                        Ok(SchemaHead {
                            queue: parsed(row.get(0)?, QueueName::new)?,
                            latest: row.get(1)?,
                            checks_outputs: row.get(2)?,
                        })
                    },
                )
            })
            .await
    }
}
