use async_trait::async_trait;
use steadfast_core::lifecycle::{Checkpoint, StepResolution, StepStart};
use steadfast_core::{Job, JobId, Reason, SignalName, Step, StepName, Timestamp, WaitFor};

use crate::{Enqueued, NewJob, StoreError, TenantScope};

/// How many steps, pending signals and children one job may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkflowLimits {
    pub max_steps: u32,
    pub max_pending_signals: u32,
    pub max_children: u32,
}

impl Default for WorkflowLimits {
    fn default() -> Self {
        Self {
            max_steps: 1000,
            max_pending_signals: 100,
            max_children: 1000,
        }
    }
}

/// The answer to a wait request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    /// The waiting step is complete (earlier, or just now because its time
    /// had passed or its signal was already there): carry on with its output.
    Completed(Step),
    /// The attempt ended; the job is `waiting`.
    Suspended(Box<Job>),
}

/// The answer to a signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signalled {
    /// The job after the signal.
    pub job: Job,
    /// The job was waiting for this signal and is queued again.
    pub woke: bool,
}

/// What one item of [`WorkflowStore::step_many`] does to its step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepAction {
    /// As [`WorkflowStore::start_step`].
    Start,
    /// As [`WorkflowStore::checkpoint_step`], with the step's output.
    Checkpoint { output: String },
}

/// One item of [`WorkflowStore::step_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOp {
    pub id: JobId,
    pub token: String,
    pub step: StepName,
    pub action: StepAction,
}

/// What one item of [`WorkflowStore::step_many`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepDone {
    Started(StepStart),
    Checkpointed(Checkpoint),
}

/// Durable workflows: steps, waits, signals and child jobs. Every call that
/// acts for a running attempt presents its lease token and is fenced like
/// `complete`.
#[async_trait]
pub trait WorkflowStore {
    async fn start_step(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        step: StepName,
        limits: WorkflowLimits,
        now: Timestamp,
    ) -> Result<StepStart, StoreError>;

    /// First checkpoint wins: a later one gets the stored step back.
    async fn checkpoint_step(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        step: StepName,
        output: String,
        limits: WorkflowLimits,
        now: Timestamp,
    ) -> Result<Checkpoint, StoreError>;

    /// Starts and checkpoints steps of many running jobs in one
    /// transaction. Each item stands alone, exactly as the single call would
    /// answer it (a lost lease rejects only its item), and items are decided
    /// in order: a later item sees what an earlier one recorded. `Err` means
    /// nothing was written.
    async fn step_many(
        &self,
        scope: &TenantScope,
        ops: Vec<StepOp>,
        limits: WorkflowLimits,
        now: Timestamp,
    ) -> Result<Vec<Result<StepDone, StoreError>>, StoreError>;

    async fn wait(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        step: StepName,
        wait_for: WaitFor,
        limits: WorkflowLimits,
        now: Timestamp,
    ) -> Result<Waited, StoreError>;

    /// Delivers a signal: wakes the job if it waits for this name, otherwise
    /// keeps it for the job's next wait on that name.
    #[allow(clippy::too_many_arguments)]
    async fn signal(
        &self,
        scope: &TenantScope,
        id: JobId,
        name: SignalName,
        payload: String,
        reason: Option<&Reason>,
        limits: WorkflowLimits,
        now: Timestamp,
    ) -> Result<Signalled, StoreError>;

    /// Operator action: settles the uncertain step `step` of job `id` (see
    /// [`crate::decide::resolve_step`]); answers the job afterwards.
    async fn resolve_step(
        &self,
        scope: &TenantScope,
        id: JobId,
        step: StepName,
        resolution: StepResolution,
        reason: &Reason,
        now: Timestamp,
    ) -> Result<Job, StoreError>;

    /// Enqueues `child` from the parent's step `step`, once: a second call for
    /// the same parent and step returns the first child, `replayed`.
    async fn spawn_child(
        &self,
        scope: &TenantScope,
        parent: JobId,
        token: &str,
        step: StepName,
        child: NewJob,
        limits: WorkflowLimits,
        now: Timestamp,
    ) -> Result<Enqueued, StoreError>;
}
