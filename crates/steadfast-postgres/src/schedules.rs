//! Schedules (see `steadfast_store::schedules`). A tick is recorded only
//! if the schedule still owes it, so nodes that handled the same tick at
//! once move it on once (their jobs are one job: the idempotency key).

use async_trait::async_trait;
use steadfast_core::{JobId, QueueName, ScheduleName, TenantId, Timestamp};
use steadfast_store::decide::{self, Decision};
use steadfast_store::schedules::{CatchUp, Overlap, Schedule, ScheduleSpec, ScheduleStore, Tick, TickOutcome};
use steadfast_store::{StoreError, TenantScope};
use tokio_postgres::Row;

use crate::rows::{millis, optional_timestamp, timestamp};
use crate::{Durability, PostgresStore, Transaction, pg_error, statement};

const COLUMNS: &str = "tenant_id, name, cron, timezone, queue, payload, overlap, catch_up, paused, next_fire_at, \
                       last_tick_at, last_outcome, last_job_id, created_at, updated_at";

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("schedule: {what}"))
}

fn known<T>(text: String, parse: fn(&str) -> Option<T>) -> Result<T, StoreError> {
    parse(&text).ok_or_else(|| corrupt(text))
}

fn schedule_from_row(row: &Row) -> Result<Schedule, StoreError> {
    Ok(Schedule {
        tenant_id: TenantId(row.get(0)),
        name: ScheduleName::new(row.get::<_, String>(1)).map_err(|e| corrupt(e.problem))?,
        spec: ScheduleSpec {
            cron: row.get(2),
            timezone: row.get(3),
            queue: QueueName::new(row.get::<_, String>(4)).map_err(|e| corrupt(e.problem))?,
            payload: row.get(5),
            overlap: known(row.get(6), Overlap::parse)?,
            catch_up: known(row.get(7), CatchUp::parse)?,
        },
        paused: row.get(8),
        next_fire_at: optional_timestamp(row.get(9))?,
        last_tick_at: optional_timestamp(row.get(10))?,
        last_outcome: row
            .get::<_, Option<String>>(11)
            .map(|outcome| known(outcome, TickOutcome::parse))
            .transpose()?,
        last_job_id: row.get::<_, Option<uuid::Uuid>>(12).map(JobId),
        created_at: timestamp(row.get(13))?,
        updated_at: timestamp(row.get(14))?,
    })
}

/// The schedule, held until the transaction ends.
async fn lock(tx: &Transaction, tenant: TenantId, name: &ScheduleName) -> Result<Option<Schedule>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM schedules WHERE tenant_id = $1 AND name = $2 FOR UPDATE");
    tx.query_opt(&statement(tx, &sql).await?, &[&tenant.0, &name.as_str()])
        .await
        .map_err(pg_error)?
        .as_ref()
        .map(schedule_from_row)
        .transpose()
}

async fn save(tx: &Transaction, schedule: &Schedule) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO schedules ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (tenant_id, name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone, \
         queue = excluded.queue, payload = excluded.payload, overlap = excluded.overlap, \
         catch_up = excluded.catch_up, paused = excluded.paused, next_fire_at = excluded.next_fire_at, \
         updated_at = excluded.updated_at"
    );
    tx.execute(
        &statement(tx, &sql).await?,
        &[
            &schedule.tenant_id.0,
            &schedule.name.as_str(),
            &schedule.spec.cron,
            &schedule.spec.timezone,
            &schedule.spec.queue.as_str(),
            &schedule.spec.payload,
            &schedule.spec.overlap.as_str(),
            &schedule.spec.catch_up.as_str(),
            &schedule.paused,
            &schedule.next_fire_at.map(millis),
            &schedule.last_tick_at.map(millis),
            &schedule.last_outcome.map(TickOutcome::as_str),
            &schedule.last_job_id.map(|id| id.0),
            &millis(schedule.created_at),
            &millis(schedule.updated_at),
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

#[async_trait]
impl ScheduleStore for PostgresStore {
    async fn put_schedule(
        &self,
        scope: &TenantScope,
        name: &ScheduleName,
        spec: ScheduleSpec,
        next_fire_at: Timestamp,
        now: Timestamp,
    ) -> Result<(Schedule, bool), StoreError> {
        let tenant = scope.tenant_id();
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            // One tenant's creations are counted one at a time.
            tx.execute(
                &statement(
                    tx,
                    "SELECT pg_advisory_xact_lock(hashtextextended('schedules/' || $1, 0))",
                )
                .await?,
                &[&tenant.0.to_string()],
            )
            .await
            .map_err(pg_error)?;
            let existing = lock(tx, tenant, name).await?;
            let kept: i64 = tx
                .query_one(
                    &statement(tx, "SELECT count(*) FROM schedules WHERE tenant_id = $1").await?,
                    &[&tenant.0],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            let (schedule, created, draft) =
                decide::put_schedule(tenant, name, existing, kept as usize, spec.clone(), next_fire_at, now)?;
            save(tx, &schedule).await?;
            let mut decision = Decision::read_only((schedule, created));
            decision.writes.audit.push((tenant, draft));
            Ok(decision)
        })
        .await
    }

    async fn schedule(&self, scope: &TenantScope, name: &ScheduleName) -> Result<Option<Schedule>, StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let sql = format!("SELECT {COLUMNS} FROM schedules WHERE tenant_id = $1 AND name = $2");
            tx.query_opt(&statement(tx, &sql).await?, &[&tenant.0, &name.as_str()])
                .await
                .map_err(pg_error)?
                .as_ref()
                .map(schedule_from_row)
                .transpose()
        })
        .await
    }

    async fn list_schedules(&self, scope: &TenantScope) -> Result<Vec<Schedule>, StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let sql = format!("SELECT {COLUMNS} FROM schedules WHERE tenant_id = $1 ORDER BY name");
            tx.query(&statement(tx, &sql).await?, &[&tenant.0])
                .await
                .map_err(pg_error)?
                .iter()
                .map(schedule_from_row)
                .collect()
        })
        .await
    }

    async fn delete_schedule(
        &self,
        scope: &TenantScope,
        name: &ScheduleName,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let tenant = scope.tenant_id();
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            let draft = decide::delete_schedule(lock(tx, tenant, name).await?)?;
            tx.execute(
                &statement(tx, "DELETE FROM schedules WHERE tenant_id = $1 AND name = $2").await?,
                &[&tenant.0, &name.as_str()],
            )
            .await
            .map_err(pg_error)?;
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
        let tenant = scope.tenant_id();
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            let (schedule, draft) = decide::pause_schedule(lock(tx, tenant, name).await?, paused, next_fire_at, now)?;
            if draft.is_some() {
                save(tx, &schedule).await?;
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
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let updated = tx
                .execute(
                    &statement(
                        tx,
                        "UPDATE schedules SET next_fire_at = $4, last_tick_at = $5, last_outcome = $6, \
                         last_job_id = coalesce($7, last_job_id), updated_at = $8 \
                         WHERE tenant_id = $1 AND name = $2 AND next_fire_at = $3",
                    )
                    .await?,
                    &[
                        &tenant.0,
                        &name.as_str(),
                        &millis(owed),
                        &millis(tick.next_fire_at),
                        &millis(tick.at),
                        &tick.outcome.as_str(),
                        &tick.job_id.map(|id| id.0),
                        &millis(now),
                    ],
                )
                .await
                .map_err(pg_error)?;
            Ok(updated == 1)
        })
        .await
    }

    async fn due_schedules(&self, now: Timestamp, limit: u32) -> Result<Vec<(TenantId, ScheduleName)>, StoreError> {
        self.transaction(None, Durability::Durable, async |tx| {
            tx.query(
                &statement(tx, "SELECT tenant_id, name FROM steadfast_due_schedules($1, $2)").await?,
                &[&millis(now), &i64::from(limit)],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| {
                Ok((
                    TenantId(row.get(0)),
                    ScheduleName::new(row.get::<_, String>(1)).map_err(|e| corrupt(e.problem))?,
                ))
            })
            .collect()
        })
        .await
    }

    async fn next_schedule_due(&self) -> Result<Option<Timestamp>, StoreError> {
        self.transaction(None, Durability::Durable, async |tx| {
            let next: Option<i64> = tx
                .query_one(&statement(tx, "SELECT steadfast_next_schedule_due()").await?, &[])
                .await
                .map_err(pg_error)?
                .get(0);
            next.map(timestamp).transpose()
        })
        .await
    }
}
