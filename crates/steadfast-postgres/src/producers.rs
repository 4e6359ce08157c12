//! Producer sequence numbers (see `steadfast_store::producers`). A
//! producer's row is held while its numbers are taken in, so concurrent
//! requests of one producer fill its holes one after the other.

use async_trait::async_trait;
use steadfast_core::{ProducerId, TenantId, Timestamp};
use steadfast_store::producers::{ProducerState, ProducerStore};
use steadfast_store::{StoreError, TenantScope};
use tokio_postgres::Row;

use crate::rows::{millis, timestamp};
use crate::{Durability, PostgresStore, pg_error, statement};

const COLUMNS: &str = "tenant_id, id, highest, missing, gaps_total, forgotten, first_seen_at, last_seen_at";

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("producer: {what}"))
}

fn producer_from_row(row: &Row) -> Result<ProducerState, StoreError> {
    Ok(ProducerState {
        tenant_id: TenantId(row.get(0)),
        id: ProducerId::new(row.get::<_, String>(1)).map_err(|e| corrupt(e.problem))?,
        highest: row.get::<_, i64>(2) as u64,
        missing: serde_json::from_str(row.get(3)).map_err(corrupt)?,
        gaps_total: row.get::<_, i64>(4) as u64,
        forgotten: row.get::<_, i64>(5) as u64,
        first_seen_at: timestamp(row.get(6))?,
        last_seen_at: timestamp(row.get(7))?,
    })
}

#[async_trait]
impl ProducerStore for PostgresStore {
    async fn receive_sequences(
        &self,
        scope: &TenantScope,
        producer: &ProducerId,
        sequences: Vec<u64>,
        now: Timestamp,
    ) -> Result<(ProducerState, u64), StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            // The row may not exist yet: create it, then hold it.
            tx.execute(
                &statement(
                    tx,
                    "INSERT INTO producers (tenant_id, id, highest, missing, gaps_total, forgotten, first_seen_at, \
                     last_seen_at) VALUES ($1, $2, 0, '[]', 0, 0, $3, $3) ON CONFLICT (tenant_id, id) DO NOTHING",
                )
                .await?,
                &[&tenant.0, &producer.as_str(), &millis(now)],
            )
            .await
            .map_err(pg_error)?;
            let sql = format!("SELECT {COLUMNS} FROM producers WHERE tenant_id = $1 AND id = $2 FOR UPDATE");
            let row = tx
                .query_one(&statement(tx, &sql).await?, &[&tenant.0, &producer.as_str()])
                .await
                .map_err(pg_error)?;
            let mut state = producer_from_row(&row)?;
            let opened = state.receive_all(&sequences, now);
            tx.execute(
                &statement(
                    tx,
                    "UPDATE producers SET highest = $3, missing = $4, gaps_total = $5, forgotten = $6, \
                     last_seen_at = $7 WHERE tenant_id = $1 AND id = $2",
                )
                .await?,
                &[
                    &tenant.0,
                    &producer.as_str(),
                    &(state.highest as i64),
                    &state.missing_column(),
                    &(state.gaps_total as i64),
                    &(state.forgotten as i64),
                    &millis(now),
                ],
            )
            .await
            .map_err(pg_error)?;
            Ok((state, opened))
        })
        .await
    }

    async fn producer(&self, scope: &TenantScope, producer: &ProducerId) -> Result<Option<ProducerState>, StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let sql = format!("SELECT {COLUMNS} FROM producers WHERE tenant_id = $1 AND id = $2");
            tx.query_opt(&statement(tx, &sql).await?, &[&tenant.0, &producer.as_str()])
                .await
                .map_err(pg_error)?
                .as_ref()
                .map(producer_from_row)
                .transpose()
        })
        .await
    }

    async fn list_producers(
        &self,
        scope: &TenantScope,
        after: Option<&ProducerId>,
        limit: u32,
    ) -> Result<Vec<ProducerState>, StoreError> {
        let tenant = scope.tenant_id();
        let after = after.map(ProducerId::as_str);
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let sql = format!(
                "SELECT {COLUMNS} FROM producers WHERE tenant_id = $1 AND ($2::text IS NULL OR id > $2) \
                 ORDER BY id LIMIT $3"
            );
            tx.query(&statement(tx, &sql).await?, &[&tenant.0, &after, &i64::from(limit)])
                .await
                .map_err(pg_error)?
                .iter()
                .map(producer_from_row)
                .collect()
        })
        .await
    }
}
