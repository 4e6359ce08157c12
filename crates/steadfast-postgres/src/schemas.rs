//! Payload schema versions (see `steadfast_store::schemas`). A
//! registration holds an advisory lock on its queue's schemas, so two
//! nodes registering at once are each checked against the other.

use async_trait::async_trait;
use steadfast_core::{QueueName, TenantId, Timestamp};
use steadfast_store::decide::{self, Decision};
use steadfast_store::schemas::{PayloadSchema, Registered, SchemaHead, SchemaRegistration, SchemaStore};
use steadfast_store::{StoreError, TenantScope};
use tokio_postgres::Row;

use crate::rows::{millis, timestamp};
use crate::{Durability, PostgresStore, Transaction, pg_error, statement};

const COLUMNS: &str = "queue, version, schema, output_schema, forced, reason, created_at";

fn schema_from_row(row: &Row) -> Result<PayloadSchema, StoreError> {
    Ok(PayloadSchema {
        queue: QueueName::new(row.get::<_, String>(0))
            .map_err(|e| StoreError::Corrupt(format!("schema queue: {}", e.problem)))?,
        version: row.get::<_, i32>(1) as u32,
        schema: row.get(2),
        output_schema: row.get(3),
        forced: row.get(4),
        reason: row.get(5),
        created_at: timestamp(row.get(6))?,
    })
}

async fn load_version(
    tx: &Transaction,
    tenant: TenantId,
    queue: &QueueName,
    version: Option<u32>,
) -> Result<Option<PayloadSchema>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM queue_schemas WHERE tenant_id = $1 AND queue = $2 \
         AND ($3::int4 IS NULL OR version = $3) ORDER BY version DESC LIMIT 1"
    );
    let version = version.map(|v| v as i32);
    tx.query_opt(&statement(tx, &sql).await?, &[&tenant.0, &queue.as_str(), &version])
        .await
        .map_err(pg_error)?
        .as_ref()
        .map(schema_from_row)
        .transpose()
}

#[async_trait]
impl SchemaStore for PostgresStore {
    async fn register_schema(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        registration: SchemaRegistration,
        now: Timestamp,
    ) -> Result<Registered, StoreError> {
        let tenant = scope.tenant_id();
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            tx.execute(
                &statement(
                    tx,
                    "SELECT pg_advisory_xact_lock(hashtextextended('queue-schemas/' || $1 || '/' || $2, 0))",
                )
                .await?,
                &[&tenant.0.to_string(), &queue.as_str()],
            )
            .await
            .map_err(pg_error)?;
            let same_version = load_version(tx, tenant, queue, Some(registration.version)).await?;
            let latest = load_version(tx, tenant, queue, None).await?;
            let kept: i64 = tx
                .query_one(
                    &statement(tx, "SELECT count(*) FROM queue_schemas WHERE tenant_id = $1").await?,
                    &[&tenant.0],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            let (registered, draft) =
                decide::register_schema(queue, same_version, latest, kept as usize, registration.clone(), now)?;
            if let Registered::Created(schema) = &registered {
                tx.execute(
                    &statement(
                        tx,
                        "INSERT INTO queue_schemas (tenant_id, queue, version, schema, output_schema, forced, \
                         reason, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .await?,
                    &[
                        &tenant.0,
                        &schema.queue.as_str(),
                        &(schema.version as i32),
                        &schema.schema,
                        &schema.output_schema,
                        &schema.forced,
                        &schema.reason,
                        &millis(schema.created_at),
                    ],
                )
                .await
                .map_err(pg_error)?;
            }
            let mut decision = Decision::read_only(registered);
            decision.writes.audit.extend(draft.map(|draft| (tenant, draft)));
            Ok(decision)
        })
        .await
    }

    async fn schemas(&self, scope: &TenantScope, queue: Option<&QueueName>) -> Result<Vec<PayloadSchema>, StoreError> {
        let tenant = scope.tenant_id();
        let queue = queue.map(QueueName::as_str);
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let sql = format!(
                "SELECT {COLUMNS} FROM queue_schemas WHERE tenant_id = $1 AND ($2::text IS NULL OR queue = $2) \
                 ORDER BY queue, version"
            );
            tx.query(&statement(tx, &sql).await?, &[&tenant.0, &queue])
                .await
                .map_err(pg_error)?
                .iter()
                .map(schema_from_row)
                .collect()
        })
        .await
    }

    async fn schema(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        version: u32,
    ) -> Result<Option<PayloadSchema>, StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            load_version(tx, tenant, queue, Some(version)).await
        })
        .await
    }

    async fn schema_heads(&self, scope: &TenantScope) -> Result<Vec<SchemaHead>, StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            tx.query(
                &statement(
                    tx,
                    "SELECT queue, max(version), bool_or(output_schema IS NOT NULL) FROM queue_schemas \
                     WHERE tenant_id = $1 GROUP BY queue ORDER BY queue",
                )
                .await?,
                &[&tenant.0],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| {
                Ok(SchemaHead {
                    queue: QueueName::new(row.get::<_, String>(0))
                        .map_err(|e| StoreError::Corrupt(format!("schema queue: {}", e.problem)))?,
                    latest: row.get::<_, i32>(1) as u32,
                    checks_outputs: row.get(2),
                })
            })
            .collect()
        })
        .await
    }
}
