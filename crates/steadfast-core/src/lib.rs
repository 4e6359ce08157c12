//! Steadfast's domain core: what a job is, which states it moves through, and
//! the rules for every move.
//!
//! This crate does no IO, never reads the clock and never draws random numbers:
//! time and randomness come in as arguments, so every transition is a plain
//! function that tests can call directly and property-test. Storage backends
//! load a [`Job`], call a transition from [`lifecycle`], and persist what it
//! returns, all inside one storage transaction.

pub mod audit;
pub mod job;
pub mod keys;
pub mod lifecycle;
pub mod limits;
pub mod names;
pub mod retry;
pub mod role;
pub mod slo;
mod step;

pub use job::{
    Attempt, AttemptError, AttemptOutcome, Job, JobId, JobState, Lease, ParentLink, TenantId, Wait, WaitFor,
};
pub use keys::{ApiKeySecret, KeyId, KeyParseError};
pub use limits::Limits;
pub use names::{
    FlowKey, IdempotencyKey, InvalidName, ProducerId, QueueName, Reason, ResourceName, ScheduleName, SignalName,
    StepName, TenantName, WorkerId,
};
pub use retry::RetryPolicy;
pub use role::{Action, Role};
pub use step::{Signal, Step, StepState, step_key};

/// A point in time. The core only ever receives it; it never asks for one.
pub type Timestamp = jiff::Timestamp;
