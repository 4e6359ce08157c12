//! Schedules: jobs enqueued on a cron pattern. The store keeps each
//! schedule and the next tick it owes; the engine works out the ticks
//! (it parses cron in the schedule's time zone) and enqueues each tick's
//! job with an idempotency key made of the schedule's name and the tick,
//! so a tick makes one job however many nodes fire it.

use async_trait::async_trait;
use jiff::Timestamp;
use steadfast_core::{JobId, QueueName, ScheduleName, TenantId};

use crate::{StoreError, TenantScope};

/// The most schedules a tenant keeps.
pub const MAX_SCHEDULES_PER_TENANT: usize = 1000;

/// What a tick does when the previous tick's job has not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Skip the tick.
    Skip,
    /// Enqueue anyway.
    Allow,
}

/// What happens to ticks missed while no node was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Missed ticks are skipped.
    None,
    /// The latest missed tick fires once.
    Latest,
}

/// What became of a schedule's last tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickOutcome {
    Fired,
    /// The previous tick's job was still unfinished (`overlap: skip`).
    SkippedOverlap,
    /// No node was running at the tick (`catch_up: none`).
    Missed,
    /// The tick's job could not be created (its payload no longer passes
    /// the queue's schema, the tenant's quota was full).
    Failed,
}

macro_rules! text_enum {
    ($type:ty { $($variant:path => $text:literal),* $(,)? }) => {
        impl $type {
            pub fn as_str(self) -> &'static str {
                match self { $($variant => $text),* }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($variant),)* _ => None }
            }
        }
    };
}

text_enum!(Overlap { Overlap::Skip => "skip", Overlap::Allow => "allow" });
text_enum!(CatchUp { CatchUp::None => "none", CatchUp::Latest => "latest" });
text_enum!(TickOutcome {
    TickOutcome::Fired => "fired",
    TickOutcome::SkippedOverlap => "skipped_overlap",
    TickOutcome::Missed => "missed",
    TickOutcome::Failed => "failed",
});

/// What a schedule enqueues, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    /// 5 fields, or 6 with seconds first; checked by the engine.
    pub cron: String,
    /// An IANA time zone name, e.g. `Europe/Berlin`.
    pub timezone: String,
    pub queue: QueueName,
    /// JSON text.
    pub payload: String,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub tenant_id: TenantId,
    pub name: ScheduleName,
    pub spec: ScheduleSpec,
    pub paused: bool,
    /// The next tick it owes; `None` while paused.
    pub next_fire_at: Option<Timestamp>,
    pub last_tick_at: Option<Timestamp>,
    pub last_outcome: Option<TickOutcome>,
    /// The job of the last tick that fired.
    pub last_job_id: Option<JobId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A tick handled: what the schedule owes next and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    pub at: Timestamp,
    pub outcome: TickOutcome,
    pub job_id: Option<JobId>,
    pub next_fire_at: Timestamp,
}

#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Creates or replaces a schedule (audited as `schedule.set`); it owes
    /// `next_fire_at` next unless paused. `true` when it was created.
    async fn put_schedule(
        &self,
        scope: &TenantScope,
        name: &ScheduleName,
        spec: ScheduleSpec,
        next_fire_at: Timestamp,
        now: Timestamp,
    ) -> Result<(Schedule, bool), StoreError>;

    async fn schedule(&self, scope: &TenantScope, name: &ScheduleName) -> Result<Option<Schedule>, StoreError>;

    /// The tenant's schedules by name (at most [`MAX_SCHEDULES_PER_TENANT`]).
    async fn list_schedules(&self, scope: &TenantScope) -> Result<Vec<Schedule>, StoreError>;

    /// Audited as `schedule.deleted`; `NotFound` if there is none.
    async fn delete_schedule(&self, scope: &TenantScope, name: &ScheduleName, now: Timestamp)
    -> Result<(), StoreError>;

    /// Pauses (owing nothing) or resumes (owing `next_fire_at`), audited
    /// as `schedule.paused` / `schedule.resumed`; already so is a no-op.
    async fn pause_schedule(
        &self,
        scope: &TenantScope,
        name: &ScheduleName,
        paused: bool,
        next_fire_at: Timestamp,
        now: Timestamp,
    ) -> Result<Schedule, StoreError>;

    /// Records a handled tick, if the schedule still owes `owed` and is not
    /// paused (another node, or a change, may have moved it on): whether it did.
    async fn record_tick(
        &self,
        scope: &TenantScope,
        name: &ScheduleName,
        owed: Timestamp,
        tick: Tick,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// For the engine's duty, across tenants: schedules owing a tick at or
    /// before `now`, earliest first.
    async fn due_schedules(&self, now: Timestamp, limit: u32) -> Result<Vec<(TenantId, ScheduleName)>, StoreError>;

    /// For the engine's duty: the earliest tick any schedule owes.
    async fn next_schedule_due(&self) -> Result<Option<Timestamp>, StoreError>;
}
