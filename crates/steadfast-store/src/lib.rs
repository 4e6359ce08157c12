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
pub mod conformance;
pub mod decide;
mod error;
mod jobs;
mod keys;
mod maintenance;
mod slos;
mod tenants;
mod workflows;

pub use audit::{AuditCursor, AuditPage, AuditQuery, AuditStore};
pub use auth::{Principal, TenantScope};
pub use error::StoreError;
pub use jobs::{
    Completing, Ended, Enqueued, JobCursor, JobPage, JobQuery, JobRecord, JobStore, LeaseRequest, LeasedJob, NewJob,
    RetryPlan, SignalRecord,
};
pub use keys::{ApiKeyInfo, KeyStore, NewApiKey, StoredKey};
pub use maintenance::{Maintenance, QueueStat, ReadyCallback, Swept};
pub use slos::{SloRecord, SloStore};
pub use tenants::{Tenant, TenantStore};
pub use workflows::{Signalled, Waited, WorkflowLimits, WorkflowStore};

/// Everything a server needs from a backend.
pub trait Store:
    TenantStore
    + KeyStore
    + JobStore
    + WorkflowStore
    + AuditStore
    + SloStore
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
        + JobStore
        + WorkflowStore
        + AuditStore
        + SloStore
        + Maintenance
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}
