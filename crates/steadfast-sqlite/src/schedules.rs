//! Schedules (see `steadfast_store::schedules`).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use steadfast_core::{JobId, QueueName, ScheduleName, TenantId, Timestamp};
use steadfast_store::decide::{self, Author, Decision};
use steadfast_store::schedules::{CatchUp, Overlap, Schedule, ScheduleSpec, ScheduleStore, Tick, TickOutcome};
use steadfast_store::{StoreError, TenantScope};

use crate::rows::{millis, optional_timestamp, parsed, query_all, timestamp};
use crate::writer::Durability;
use crate::{SqliteStore, sqlite_error};

const COLUMNS: &str = "tenant_id, name, cron, timezone, queue, payload, overlap, catch_up, paused, next_fire_at, \
                       last_tick_at, last_outcome, last_job_id, created_at, updated_at";

#[derive(Debug, thiserror::Error)]
#[error("unknown {0}: {1}")]
struct UnknownValue(&'static str, String);

/// A stored enumeration's text, read back.
fn known<T>(text: String, what: &'static str, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    parsed(text, |text| parse(&text).ok_or(UnknownValue(what, text)))
}

fn schedule_from_row(row: &Row<'_>) -> rusqlite::Result<Schedule> {
    Ok(Schedule {
        tenant_id: parsed(row.get(0)?, |s| s.parse::<TenantId>())?,
        name: parsed(row.get(1)?, ScheduleName::new)?,
        spec: ScheduleSpec {
            cron: row.get(2)?,
            timezone: row.get(3)?,
            queue: parsed(row.get(4)?, QueueName::new)?,
            payload: row.get(5)?,
            overlap: known(row.get(6)?, "overlap", Overlap::parse)?,
            catch_up: known(row.get(7)?, "catch_up", CatchUp::parse)?,
        },
        paused: row.get(8)?,
        next_fire_at: optional_timestamp(row.get(9)?)?,
        last_tick_at: optional_timestamp(row.get(10)?)?,
        last_outcome: row
            .get::<_, Option<String>>(11)?
            .map(|outcome| known(outcome, "tick outcome", TickOutcome::parse))
            .transpose()?,
        last_job_id: row
            .get::<_, Option<String>>(12)?
            .map(|id| parsed(id, |s| s.parse::<JobId>()))
            .transpose()?,
        created_at: timestamp(row.get(13)?)?,
        updated_at: timestamp(row.get(14)?)?,
    })
}

fn load(conn: &Connection, tenant: TenantId, name: &ScheduleName) -> Result<Option<Schedule>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM schedules WHERE tenant_id = ?1 AND name = ?2"
    ))
    .and_then(|mut select| {
        select
            .query_row(params![tenant.to_string(), name.as_str()], schedule_from_row)
            .optional()
    })
    .map_err(sqlite_error)
}

fn save(conn: &Connection, schedule: &Schedule) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO schedules ({COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
    ))
    .and_then(|mut upsert| {
        upsert.execute(params![
            schedule.tenant_id.to_string(),
            schedule.name.as_str(),
            schedule.spec.cron,
            schedule.spec.timezone,
            schedule.spec.queue.as_str(),
            schedule.spec.payload,
            schedule.spec.overlap.as_str(),
            schedule.spec.catch_up.as_str(),
            schedule.paused,
            schedule.next_fire_at.map(millis),
            schedule.last_tick_at.map(millis),
            schedule.last_outcome.map(TickOutcome::as_str),
            schedule.last_job_id.map(|id| id.to_string()),
            millis(schedule.created_at),
            millis(schedule.updated_at),
        ])
    })
    .map_err(sqlite_error)?;
    Ok(())
}

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn put_schedule(
        &self,
        scope: &TenantScope,
        name: &ScheduleName,
        spec: ScheduleSpec,
        next_fire_at: Timestamp,
        now: Timestamp,
    ) -> Result<(Schedule, bool), StoreError> {
        let (tenant, name) = (scope.tenant_id(), name.clone());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let existing = load(conn, tenant, &name)?;
            let kept: i64 = conn
                .prepare_cached("SELECT count(*) FROM schedules WHERE tenant_id = ?1")
                .and_then(|mut count| count.query_row(params![tenant.to_string()], |row| row.get(0)))
                .map_err(sqlite_error)?;
            let (schedule, created, draft) =
                decide::put_schedule(tenant, &name, existing, kept as usize, spec, next_fire_at, now)?;
            save(conn, &schedule)?;
            let mut decision = Decision::read_only((schedule, created));
            decision.writes.audit.push((tenant, draft));
            Ok(decision)
        })
        .await
    }

    async fn schedule(&self, scope: &TenantScope, name: &ScheduleName) -> Result<Option<Schedule>, StoreError> {
        let (tenant, name) = (scope.tenant_id(), name.clone());
        self.readers().read(move |conn| load(conn, tenant, &name)).await
    }

    async fn list_schedules(&self, scope: &TenantScope) -> Result<Vec<Schedule>, StoreError> {
        let tenant = scope.tenant_id();
        self.readers()
            .read(move |conn| {
                query_all(
                    conn,
                    &format!("SELECT {COLUMNS} FROM schedules WHERE tenant_id = ?1 ORDER BY name"),
                    params![tenant.to_string()],
                    schedule_from_row,
                )
            })
            .await
    }

    async fn delete_schedule(
        &self,
        scope: &TenantScope,
        name: &ScheduleName,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (tenant, name) = (scope.tenant_id(), name.clone());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let draft = decide::delete_schedule(load(conn, tenant, &name)?)?;
            conn.prepare_cached("DELETE FROM schedules WHERE tenant_id = ?1 AND name = ?2")
                .and_then(|mut delete| delete.execute(params![tenant.to_string(), name.as_str()]))
                .map_err(sqlite_error)?;
            let mut decision = Decision::read_only(());
            decision.writes.audit.push((tenant, draft));
            Ok(decision)
        })
        .await
    }

    async fn pause_schedule(
        &self,
        scope: &TenantScope,
        name: &ScheduleName,
        paused: bool,
        next_fire_at: Timestamp,
        now: Timestamp,
    ) -> Result<Schedule, StoreError> {
        let (tenant, name) = (scope.tenant_id(), name.clone());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let (schedule, draft) = decide::pause_schedule(load(conn, tenant, &name)?, paused, next_fire_at, now)?;
            if draft.is_some() {
                save(conn, &schedule)?;
            }
            let mut decision = Decision::read_only(schedule);
            decision.writes.audit.extend(draft.map(|draft| (tenant, draft)));
            Ok(decision)
        })
        .await
    }

    async fn record_tick(
        &self,
        scope: &TenantScope,
        name: &ScheduleName,
        owed: Timestamp,
        tick: Tick,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let (tenant, name) = (scope.tenant_id(), name.clone());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let updated = conn
                .prepare_cached(
                    "UPDATE schedules SET next_fire_at = ?4, last_tick_at = ?5, last_outcome = ?6, \
                     last_job_id = coalesce(?7, last_job_id), updated_at = ?8 \
                     WHERE tenant_id = ?1 AND name = ?2 AND next_fire_at = ?3",
                )
                .and_then(|mut update| {
                    update.execute(params![
                        tenant.to_string(),
                        name.as_str(),
                        millis(owed),
                        millis(tick.next_fire_at),
                        millis(tick.at),
                        tick.outcome.as_str(),
                        tick.job_id.map(|id| id.to_string()),
                        millis(now),
                    ])
                })
                .map_err(sqlite_error)?;
            Ok(Decision::read_only(updated == 1))
        })
        .await
    }

    async fn due_schedules(&self, now: Timestamp, limit: u32) -> Result<Vec<(TenantId, ScheduleName)>, StoreError> {
        self.readers()
            .read(move |conn| {
                query_all(
                    conn,
                    "SELECT tenant_id, name FROM schedules WHERE next_fire_at <= ?1 ORDER BY next_fire_at LIMIT ?2",
                    params![millis(now), limit],
                    |row| {
                        Ok((
                            parsed(row.get(0)?, |s| s.parse::<TenantId>())?,
                            parsed(row.get(1)?, ScheduleName::new)?,
                        ))
                    },
                )
            })
            .await
    }

    async fn next_schedule_due(&self) -> Result<Option<Timestamp>, StoreError> {
        self.readers()
            .read(move |conn| {
                let next: Option<i64> = conn
                    .prepare_cached("SELECT min(next_fire_at) FROM schedules WHERE next_fire_at IS NOT NULL")
                    .and_then(|mut select| select.query_row([], |row| row.get(0)))
                    .map_err(sqlite_error)?;
                next.map(timestamp).transpose().map_err(sqlite_error)
            })
            .await
    }
}
