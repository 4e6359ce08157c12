//! Schedules: cron patterns read in a time zone, and the duty that fires
//! their ticks.
//!
//! A tick's job carries the idempotency key `schedule:{name}:{tick in Unix
//! ms}`, and the tick is recorded only once that job exists. So a node that
//! dies between the two, or several nodes handling the same tick at once,
//! still make exactly one job: the next attempt replays the key.

use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use steadfast_core::lifecycle::EnqueueRequest;
use steadfast_core::{JobId, JobState, ScheduleName, Timestamp};
use steadfast_store::schedules::{CatchUp, Overlap, Schedule, ScheduleSpec, Tick, TickOutcome};
use steadfast_store::{StoreError, TenantScope, auth};

use super::Engine;
use crate::metrics::OutcomeLabels;

/// A tick handled later than this after its time was missed (no node was
/// running): `catch_up` decides whether it still fires.
pub const MISFIRE_GRACE: Duration = Duration::from_secs(60);
/// Most due schedules one pass handles.
const PASS_LIMIT: u32 = 500;
/// Longest pause between passes.
const IDLE: Duration = Duration::from_secs(1);
/// Fire times a schedule's answer lists.
pub const UPCOMING: usize = 5;

/// A schedule's pattern and time zone, checked.
#[derive(Debug)]
pub struct Timing {
    cron: Cron,
    zone: TimeZone,
}

impl Timing {
    /// `cron`: 5 fields, or 6 with seconds first (Vixie cron's syntax, with
    /// `L`, `W` and `#`); `timezone`: an IANA name from the tz database.
    pub fn new(cron: &str, timezone: &str) -> Result<Timing, String> {
        let fields = cron.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!("cron: 5 fields, or 6 with seconds first; got {fields}"));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(cron)
            .map_err(|error| format!("cron: {error}"))?;
        let zone = TimeZone::get(timezone).map_err(|_| format!("timezone: {timezone:?} is not in the tz database"))?;
        let timing = Timing { cron, zone };
        // A pattern that can never match (`0 0 30 2 *`) is refused now,
        // not discovered by the duty.
        timing.next_after(Timestamp::UNIX_EPOCH)?;
        Ok(timing)
    }

    pub fn of(spec: &ScheduleSpec) -> Result<Timing, String> {
        Timing::new(&spec.cron, &spec.timezone)
    }

    /// The first tick after `at`.
    pub fn next_after(&self, at: Timestamp) -> Result<Timestamp, String> {
        self.cron
            .find_next_occurrence(&at.to_zoned(self.zone.clone()), false)
            .map(|next| next.timestamp())
            .map_err(|_| "cron: the pattern never fires".to_owned())
    }

    /// Up to `count` ticks from `from` on, `from` included if it is one.
    pub fn upcoming(&self, from: Timestamp, count: usize) -> Vec<Timestamp> {
        self.cron
            .iter_from(from.to_zoned(self.zone.clone()), croner::Direction::Forward)
            .take(count)
            .map(|tick| tick.timestamp())
            .collect()
    }

    /// The latest tick at or before `now`, if any is at or after `owed`.
    fn latest(&self, owed: Timestamp, now: Timestamp) -> Timestamp {
        self.cron
            .find_previous_occurrence(&now.to_zoned(self.zone.clone()), true)
            .map(|tick| tick.timestamp())
            .ok()
            .filter(|tick| *tick >= owed)
            .unwrap_or(owed)
    }
}

/// What a schedule owing `owed` does at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The tick handled.
    pub tick: Timestamp,
    /// Whether it fires (else it was missed).
    pub fires: bool,
    /// The tick owed next.
    pub next: Timestamp,
}

/// A tick is handled on time when it is at most [`MISFIRE_GRACE`] old:
/// then it fires, and the schedule owes the tick after it (which may be
/// due too, if the node fell a little behind: every tick still fires).
/// An older tick was missed while no node ran: the schedule skips to the
/// latest tick due, which fires if it is on time or `catch_up` is
/// `latest`, and owes the first tick after now. However many ticks were
/// missed, at most one of them fires.
pub fn plan(timing: &Timing, owed: Timestamp, catch_up: CatchUp, now: Timestamp) -> Result<Plan, String> {
    let on_time = |tick: Timestamp| now.duration_since(tick).unsigned_abs() <= MISFIRE_GRACE;
    if on_time(owed) {
        return Ok(Plan {
            tick: owed,
            fires: true,
            next: timing.next_after(owed)?,
        });
    }
    let tick = timing.latest(owed, now);
    Ok(Plan {
        tick,
        fires: on_time(tick) || catch_up == CatchUp::Latest,
        next: timing.next_after(tick.max(now))?,
    })
}

/// The idempotency key of a tick's job.
pub fn tick_key(name: &ScheduleName, tick: Timestamp) -> String {
    format!("schedule:{name}:{}", tick.as_millisecond())
}

impl Engine {
    /// Creates or replaces a schedule, owing its first tick after now.
    /// The payload must pass the queue's schema now.
    pub async fn put_schedule(
        &self,
        scope: &TenantScope,
        name: &ScheduleName,
        spec: ScheduleSpec,
    ) -> Result<(Schedule, bool), ScheduleError> {
        let timing = Timing::of(&spec).map_err(ScheduleError::Invalid)?;
        let mut check = [self.tick_spec(name, &spec, None)?];
        self.check_payloads(scope, &mut check).await?;
        let now = self.now();
        let next = timing.next_after(now).map_err(ScheduleError::Invalid)?;
        let put = self.store().put_schedule(scope, name, spec, next, now).await?;
        self.inner.schedules_nudge.notify_one();
        Ok(put)
    }

    /// Pauses, or resumes owing the first tick after now.
    pub async fn pause_schedule(
        &self,
        scope: &TenantScope,
        name: &ScheduleName,
        paused: bool,
    ) -> Result<Schedule, StoreError> {
        let now = self.now();
        let existing = self.store().schedule(scope, name).await?.ok_or(StoreError::NotFound)?;
        let next = Timing::of(&existing.spec)
            .and_then(|timing| timing.next_after(now))
            .map_err(StoreError::Corrupt)?;
        let schedule = self.store().pause_schedule(scope, name, paused, next, now).await?;
        self.inner.schedules_nudge.notify_one();
        Ok(schedule)
    }

    /// Handles every due tick (at most [`PASS_LIMIT`] schedules); how many
    /// this pass recorded.
    pub async fn run_schedules_once(&self) -> Result<usize, StoreError> {
        let now = self.now();
        let mut handled = 0;
        for (tenant, name) in self.store().due_schedules(now, PASS_LIMIT).await? {
            // One schedule's trouble must not hold up the others: it is
            // logged and tried again next pass.
            match self.handle_tick(&auth::system_for(tenant), &name, now).await {
                Ok(true) => handled += 1,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, schedule = %name, "a schedule's tick failed; retrying"),
            }
        }
        Ok(handled)
    }

    /// Fires the schedules until the engine drains: when the next tick is
    /// due, when a schedule changes, and at least every second.
    pub(super) async fn run_schedules(self) {
        let mut draining = self.inner.draining.subscribe();
        while !*draining.borrow_and_update() {
            let pause = match self.run_schedules_once().await {
                // A full pass: more may be due.
                Ok(handled) if handled >= PASS_LIMIT as usize => Duration::ZERO,
                Ok(_) => match self.store().next_schedule_due().await {
                    // Overdue (a schedule owes the tick after the one just
                    // handled, and it is due too): at once.
                    Ok(Some(next)) if next <= self.now() => Duration::ZERO,
                    Ok(Some(next)) => next.duration_since(self.now()).unsigned_abs().min(IDLE),
                    Ok(None) | Err(_) => IDLE,
                },
                Err(error) => {
                    tracing::warn!(%error, "firing schedules failed; retrying");
                    IDLE
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.inner.schedules_nudge.notified() => {}
                _ = draining.changed() => {}
            }
        }
    }

    /// Handles the tick `name` owes at `now`: fires it (unless it was
    /// missed, or overlaps an unfinished job), then records it. Storage
    /// trouble leaves it owed, to be handled again.
    async fn handle_tick(&self, scope: &TenantScope, name: &ScheduleName, now: Timestamp) -> Result<bool, StoreError> {
        let Some(schedule) = self.store().schedule(scope, name).await? else {
            return Ok(false);
        };
        let Some(owed) = schedule.next_fire_at.filter(|owed| *owed <= now) else {
            return Ok(false);
        };
        let plan = Timing::of(&schedule.spec)
            .and_then(|timing| plan(&timing, owed, schedule.spec.catch_up, now))
            .map_err(StoreError::Corrupt)?;
        let (outcome, job_id) = if !plan.fires {
            (TickOutcome::Missed, None)
        } else if schedule.spec.overlap == Overlap::Skip && self.still_running(scope, &schedule).await? {
            (TickOutcome::SkippedOverlap, None)
        } else {
            self.fire(scope, &schedule, plan.tick).await?
        };
        let tick = Tick {
            at: plan.tick,
            outcome,
            job_id,
            next_fire_at: plan.next,
        };
        let recorded = self.store().record_tick(scope, name, owed, tick, now).await?;
        if recorded && self.records_metrics() {
            let labels = OutcomeLabels {
                queue: self.inner.metrics.queue(schedule.spec.queue.as_str()),
                outcome: outcome.as_str().to_owned(),
            };
            self.inner.metrics.schedule_ticks.get_or_create(&labels).inc();
        }
        Ok(recorded)
    }

    /// Whether the job of the schedule's last fired tick is unfinished.
    async fn still_running(&self, scope: &TenantScope, schedule: &Schedule) -> Result<bool, StoreError> {
        let Some(id) = schedule.last_job_id else {
            return Ok(false);
        };
        Ok(self.store().job(scope, id).await?.is_some_and(|record| {
            matches!(
                record.job.state,
                JobState::Scheduled | JobState::Queued | JobState::Running | JobState::Waiting
            )
        }))
    }

    /// Enqueues the tick's job. Storage trouble is an error (the tick stays
    /// owed); a job the queue refuses (its schema, the tenant's quota) is a
    /// `failed` tick, passed over.
    async fn fire(
        &self,
        scope: &TenantScope,
        schedule: &Schedule,
        tick: Timestamp,
    ) -> Result<(TickOutcome, Option<JobId>), StoreError> {
        let spec = match self.tick_spec(&schedule.name, &schedule.spec, Some(tick)) {
            Ok(spec) => spec,
            Err(error) => {
                tracing::warn!(%error, schedule = %schedule.name, "a schedule's job is not valid");
                return Ok((TickOutcome::Failed, None));
            }
        };
        match self.enqueue(scope, vec![spec]).await {
            Ok(mut enqueued) => Ok((TickOutcome::Fired, Some(enqueued.remove(0).job.id))),
            // The tick's job was made before the schedule's payload changed.
            Err(StoreError::IdempotencyKeyReused { .. }) => Ok((TickOutcome::Fired, None)),
            Err(error @ (StoreError::Unavailable(_) | StoreError::StorageFull | StoreError::Corrupt(_))) => Err(error),
            Err(error) => {
                tracing::warn!(%error, schedule = %schedule.name, "a schedule's job was refused");
                Ok((TickOutcome::Failed, None))
            }
        }
    }

    /// The job a tick enqueues; without a tick, the one a check of the
    /// payload uses.
    fn tick_spec(
        &self,
        name: &ScheduleName,
        spec: &ScheduleSpec,
        tick: Option<Timestamp>,
    ) -> Result<steadfast_core::lifecycle::JobSpec, ScheduleError> {
        let payload: serde_json::Value =
            serde_json::from_str(&spec.payload).map_err(|_| ScheduleError::Invalid("payload: not JSON".into()))?;
        let fingerprint = super::fingerprint(&super::Fingerprinted {
            queue: spec.queue.as_str(),
            payload: &payload,
            max_attempts: None,
            timeout_secs: None,
            run_at: None,
            priority: None,
        });
        let request = EnqueueRequest {
            queue: spec.queue.as_str().to_owned(),
            payload: spec.payload.clone(),
            idempotency_key: tick.map(|tick| tick_key(name, tick)),
            ..EnqueueRequest::default()
        };
        request
            .validate(self.limits(), fingerprint, self.now())
            .map_err(|invalid| ScheduleError::Invalid(invalid.to_string()))
    }
}

/// Why a schedule was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The pattern, time zone or job is not valid; safe to show.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn timing(cron: &str, zone: &str) -> Timing {
        Timing::new(cron, zone).unwrap()
    }

    #[test]
    fn five_or_six_fields_and_a_known_zone() {
        assert!(Timing::new("*/5 * * * *", "UTC").is_ok());
        assert!(Timing::new("30 */5 * * * *", "Europe/Berlin").is_ok());
        for (cron, zone) in [
            ("* * * *", "UTC"),
            ("0 0 0 1 1 * 2030", "UTC"),
            ("61 * * * *", "UTC"),
            ("0 0 30 2 *", "UTC"),
            ("* * * * *", "Mars/Olympus"),
        ] {
            assert!(Timing::new(cron, zone).is_err(), "{cron} in {zone}");
        }
    }

    #[test]
    fn weekdays_count_from_sunday_as_in_cron() {
        // 2026-12-06 is a Sunday.
        let sunday = timing("0 9 * * 0", "UTC");
        assert_eq!(
            sunday.next_after(at("2026-12-02T00:00:00Z")).unwrap(),
            at("2026-12-06T09:00:00Z")
        );
    }

    #[test]
    fn a_daily_tick_in_a_spring_gap_runs_after_it_and_once_in_a_repeat() {
        // Europe/Berlin: 2026-03-29 02:00 jumps to 03:00; 2026-10-25 03:00 goes back to 02:00.
        let daily = timing("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            daily.upcoming(at("2026-03-28T00:00:00Z"), 3),
            vec![
                at("2026-03-28T01:30:00Z"),
                at("2026-03-29T01:00:00Z"),
                at("2026-03-30T00:30:00Z")
            ],
            "the gap's 02:30 runs at 03:00 local, the first time after it"
        );
        assert_eq!(
            daily.upcoming(at("2026-10-24T00:00:00Z"), 3),
            vec![
                at("2026-10-24T00:30:00Z"),
                at("2026-10-25T00:30:00Z"),
                at("2026-10-26T01:30:00Z")
            ],
            "the repeated 02:30 runs once, the first time"
        );
        // An interval pattern runs in both passes of the repeated hour.
        let quarterly = timing("*/30 * * * *", "Europe/Berlin");
        assert_eq!(
            quarterly.upcoming(at("2026-10-25T00:00:00Z"), 4),
            vec![
                at("2026-10-25T00:00:00Z"),
                at("2026-10-25T00:30:00Z"),
                at("2026-10-25T01:00:00Z"),
                at("2026-10-25T01:30:00Z"),
            ]
        );
    }

    #[test]
    fn a_node_a_little_behind_still_fires_every_tick() {
        let every_second = timing("* * * * * *", "UTC");
        let owed = at("2026-12-02T10:00:00Z");
        let behind = plan(&every_second, owed, CatchUp::None, at("2026-12-02T10:00:03.5Z")).unwrap();
        assert_eq!(
            behind,
            Plan {
                tick: owed,
                fires: true,
                next: at("2026-12-02T10:00:01Z")
            }
        );
        // Missed ticks pass over to the latest, which is on time itself.
        let after_downtime = plan(&every_second, owed, CatchUp::None, at("2026-12-02T10:05:00.5Z")).unwrap();
        assert_eq!(
            after_downtime,
            Plan {
                tick: at("2026-12-02T10:05:00Z"),
                fires: true,
                next: at("2026-12-02T10:05:01Z")
            }
        );
    }

    #[test]
    fn an_on_time_tick_fires_and_a_missed_one_only_with_catch_up() {
        let hourly = timing("0 * * * *", "UTC");
        let owed = at("2026-12-02T10:00:00Z");
        let on_time = plan(&hourly, owed, CatchUp::None, at("2026-12-02T10:00:02Z")).unwrap();
        assert_eq!(
            on_time,
            Plan {
                tick: owed,
                fires: true,
                next: at("2026-12-02T11:00:00Z")
            }
        );
        // Down from 09:59 to 12:30: the ticks of 10, 11 and 12 o'clock passed.
        let after_downtime = at("2026-12-02T12:30:00Z");
        let skipped = plan(&hourly, owed, CatchUp::None, after_downtime).unwrap();
        assert_eq!(
            skipped,
            Plan {
                tick: at("2026-12-02T12:00:00Z"),
                fires: false,
                next: at("2026-12-02T13:00:00Z")
            }
        );
        let caught_up = plan(&hourly, owed, CatchUp::Latest, after_downtime).unwrap();
        assert_eq!(caught_up, Plan { fires: true, ..skipped });
    }
}
