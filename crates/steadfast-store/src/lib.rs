//! Steadfast's storage boundary.
//!
//! Small traits, one per concern ([`TenantStore`], [`KeyStore`], [`JobStore`],
//! [`WorkflowStore`], [`Maintenance`]), which every backend implements with the same module
//! names. Every tenant-owned read or write takes a [`TenantScope`], and a
//! scope can only be made by [`auth`]: from a verified API key, or by a local
//! operator who holds the data directory or the database owner credentials.
//!
//! [`conformance`] is the one test suite every backend must pass; each
//! backend crate runs it with [`conformance_suite!`].

pub mod audit;
pub mod auth;
pub mod bulk;
pub mod conformance;
pub mod dashboard;
pub mod decide;
pub mod outbox;
pub mod producers;
pub mod schedules;
pub mod schemas;

/// How a job's wait is stored, the same in every backend: the waiting
/// step, the awaited signal (none for a sleep) and the deadline in Unix
/// milliseconds (the sweeps' index).
pub fn wait_columns(job: &steadfast_core::Job) -> (Option<&str>, Option<&str>, Option<i64>) {
    match &job.wait {
        None => (None, None, None),
        Some(wait) => {
            let signal = match &wait.wait_for {
                steadfast_core::WaitFor::Signal { name, .. } => Some(name.as_str()),
                steadfast_core::WaitFor::Until(_) => None,
            };
            (
                Some(wait.step.as_str()),
                signal,
                wait.deadline().map(|at| at.as_millisecond()),
            )
        }
    }
}
mod error;
pub mod flow;
mod inbox;
mod jobs;
mod keys;
mod limits;
mod maintenance;
mod slos;
mod tenants;
mod workflows;

pub use audit::{AuditCursor, AuditPage, AuditQuery, AuditStore};
pub use auth::{Principal, TenantScope};
pub use bulk::BulkStore;
pub use dashboard::DashboardStore;
pub use error::StoreError;
pub use flow::{FlowStore, PolicyPatch, QueueFlow, QueueFlowState, QueueOverview, QueuePolicy};
pub use inbox::{
    EventPage, EventRecord, InboxEvent, InboxStore, Ingested, JobEvent, SignatureFailures, Source, SourceSecret,
};
pub use jobs::{
    Completing, Ended, Enqueued, JobCursor, JobPage, JobQuery, JobRecord, JobStore, LeaseRequest, Leased, LeasedJob,
    NewJob, RetryPlan, SignalRecord, SingletonOutcome,
};
pub use keys::{ApiKeyInfo, KeyStore, LAST_USED_RESOLUTION, NewApiKey, StoredKey};
pub use limits::{LimitStore, PruneCutoffs, QueueRetention, Retention, TenantLimits};
pub use maintenance::{Maintenance, QueueStat, ReadyCallback, Swept};
pub use outbox::OutboxStore;
pub use producers::ProducerStore;
pub use schedules::ScheduleStore;
pub use schemas::SchemaStore;
pub use slos::{SloRecord, SloStore};
pub use tenants::{Tenant, TenantStore};
pub use workflows::{Signalled, StepAction, StepDone, StepOp, Waited, WorkflowLimits, WorkflowStore};

/// Everything a server needs from a backend.
pub trait Store:
    TenantStore
    + KeyStore
    + LimitStore
    + JobStore
    + FlowStore
    + WorkflowStore
    + AuditStore
    + SloStore
    + InboxStore
    + DashboardStore
    + BulkStore
    + SchemaStore
    + ScheduleStore
    + ProducerStore
    + OutboxStore
    + Maintenance
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: TenantStore
        + KeyStore
        + LimitStore
        + JobStore
        + FlowStore
        + WorkflowStore
        + AuditStore
        + SloStore
        + InboxStore
        + DashboardStore
        + BulkStore
        + SchemaStore
        + ScheduleStore
        + ProducerStore
        + OutboxStore
        + Maintenance
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}
