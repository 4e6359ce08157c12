use steadfast_core::JobState;
use steadfast_core::lifecycle::Rejection;

/// What a store operation can say went wrong. The first group are answers
/// about the request and change nothing; `Unavailable` means the store could
/// not be reached or could not persist, and the request may be retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("the lease is no longer held")]
    LeaseLost,
    #[error("job is {state}; cannot {action}")]
    InvalidState { state: JobState, action: &'static str },
    /// The idempotency key of batch item `index` was used, within the dedup
    /// window, for a request with different content.
    #[error("idempotency key reused with a different request (item {index})")]
    IdempotencyKeyReused { index: usize },
    #[error("already exists")]
    AlreadyExists,
    /// The request conflicts with what is stored; the message says how and
    /// is safe to show.
    #[error("{0}")]
    Conflict(String),
    /// A new schema version would refuse payloads the previous one accepted.
    #[error("the schema breaks the previous version")]
    SchemaIncompatible(Vec<crate::schemas::Violation>),
    /// The payload of batch item `index` fails its queue's schema.
    #[error("the payload fails the queue's schema (item {index})")]
    PayloadInvalid {
        index: usize,
        violations: Vec<crate::schemas::Violation>,
    },
    /// The output of batch item `index` fails its queue's output schema.
    #[error("the output fails the queue's output schema (item {index})")]
    OutputInvalid {
        index: usize,
        violations: Vec<crate::schemas::Violation>,
    },
    /// Batch item `index` would replace the payload of its singleton key's
    /// job, which has already started.
    #[error("the singleton's job has started; its payload can no longer change (item {index})")]
    SingletonRunning { index: usize },
    /// The tenant holds as many unfinished jobs as it may.
    #[error("the tenant may hold at most {limit} unfinished jobs")]
    QuotaExceeded { limit: u64 },
    /// The API key is revoked or expired: it cannot be rotated.
    #[error("the key is revoked or expired")]
    KeyNotActive,
    /// A per-job bound (steps, pending signals, children) would be exceeded.
    #[error("at most {limit} {what}")]
    LimitExceeded { what: &'static str, limit: u32 },
    /// The request's content breaks a bound the store checks (e.g. a policy
    /// merged with the stored one); the message names the field and is safe to show.
    #[error("{0}")]
    Invalid(String),
    /// Could not read or durably write (locked, I/O error). Nothing was acknowledged.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The filesystem (or the database server's) is full: nothing was
    /// written; reads still work, and writes work again once there is room.
    #[error("storage is full")]
    StorageFull,
    /// The audit signing key presented is not the deployment's.
    #[error(transparent)]
    SigningKey(#[from] crate::decide::SigningKeyRefused),
    /// Stored data broke an invariant. Never expected; reported loudly.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<Rejection> for StoreError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::LeaseLost => StoreError::LeaseLost,
            Rejection::InvalidState { state, action } => StoreError::InvalidState { state, action },
            Rejection::NotDue => StoreError::InvalidState {
                state: JobState::Scheduled,
                action: "run yet",
            },
        }
    }
}
