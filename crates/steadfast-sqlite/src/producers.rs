//! Producer sequence numbers (see `steadfast_store::producers`).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use steadfast_core::{ProducerId, TenantId, Timestamp};
use steadfast_store::decide::{Author, Decision};
use steadfast_store::producers::{ProducerState, ProducerStore};
use steadfast_store::{StoreError, TenantScope};

use crate::rows::{millis, parsed, query_all, timestamp};
use crate::writer::Durability;
use crate::{SqliteStore, sqlite_error};

const COLUMNS: &str = "tenant_id, id, highest, missing, gaps_total, forgotten, first_seen_at, last_seen_at";

fn producer_from_row(row: &Row<'_>) -> rusqlite::Result<ProducerState> {
    Ok(ProducerState {
        tenant_id: parsed(row.get(0)?, |s| s.parse::<TenantId>())?,
        id: parsed(row.get(1)?, ProducerId::new)?,
        highest: row.get::<_, i64>(2)? as u64,
        missing: parsed(row.get(3)?, |text| serde_json::from_str(&text))?,
        gaps_total: row.get::<_, i64>(4)? as u64,
        forgotten: row.get::<_, i64>(5)? as u64,
        first_seen_at: timestamp(row.get(6)?)?,
        last_seen_at: timestamp(row.get(7)?)?,
    })
}

fn load(conn: &Connection, tenant: TenantId, id: &ProducerId) -> Result<Option<ProducerState>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM producers WHERE tenant_id = ?1 AND id = ?2"
    ))
    .and_then(|mut select| {
        select
            .query_row(params![tenant.to_string(), id.as_str()], producer_from_row)
            .optional()
    })
    .map_err(sqlite_error)
}

#[async_trait]
impl ProducerStore for SqliteStore {
    async fn receive_sequences(
        &self,
        scope: &TenantScope,
        producer: &ProducerId,
        sequences: Vec<u64>,
        now: Timestamp,
    ) -> Result<(ProducerState, u64), StoreError> {
        let (tenant, producer) = (scope.tenant_id(), producer.clone());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let mut state =
                load(conn, tenant, &producer)?.unwrap_or_else(|| ProducerState::new(tenant, producer.clone(), now));
            let opened = state.receive_all(&sequences, now);
            conn.prepare_cached(&format!(
                "INSERT OR REPLACE INTO producers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))
            .and_then(|mut upsert| {
                upsert.execute(params![
                    tenant.to_string(),
                    state.id.as_str(),
                    state.highest as i64,
                    state.missing_column(),
                    state.gaps_total as i64,
                    state.forgotten as i64,
                    millis(state.first_seen_at),
                    millis(state.last_seen_at),
                ])
            })
            .map_err(sqlite_error)?;
            Ok(Decision::read_only((state, opened)))
        })
        .await
    }

    async fn producer(&self, scope: &TenantScope, producer: &ProducerId) -> Result<Option<ProducerState>, StoreError> {
        let (tenant, producer) = (scope.tenant_id(), producer.clone());
        self.readers().read(move |conn| load(conn, tenant, &producer)).await
    }

    async fn list_producers(
        &self,
        scope: &TenantScope,
        after: Option<&ProducerId>,
        limit: u32,
    ) -> Result<Vec<ProducerState>, StoreError> {
        let (tenant, after) = (scope.tenant_id(), after.cloned());
        self.readers()
            .read(move |conn| {
                query_all(
                    conn,
                    &format!(
                        "SELECT {COLUMNS} FROM producers WHERE tenant_id = ?1 AND (?2 IS NULL OR id > ?2) \
                         ORDER BY id LIMIT ?3"
                    ),
                    params![tenant.to_string(), after.as_ref().map(ProducerId::as_str), limit],
                    producer_from_row,
                )
            })
            .await
    }
}
