//! The storage conformance suite: one set of behaviours every backend must
//! show, written against the traits only. A backend runs it with
//! [`conformance_suite!`](crate::conformance_suite), which turns each function
//! here into a named test of that backend.
//!
//! Time is always passed in, never read, so leases, backoff and dedup windows
//! are tested exactly.

mod audit;
mod bulk;
mod dashboard;
mod flow;
mod inbox;
mod jobs;
mod leases;
mod limits;
mod operators;
mod tenancy;
mod upgrade;
mod workflows;

pub use audit::*;
pub use bulk::*;
pub use dashboard::*;
pub use flow::*;
pub use inbox::*;
pub use jobs::*;
pub use leases::*;
pub use limits::*;
pub use operators::*;
pub use tenancy::*;
pub use upgrade::*;
pub use workflows::*;

use std::time::Duration;

use steadfast_core::lifecycle::{EnqueueRequest, JobSpec};
use steadfast_core::{Job, JobId, KeyId, Limits, QueueName, Role, TenantId, TenantName, Timestamp, WorkerId};

use crate::{LeaseRequest, NewApiKey, NewJob, Store, TenantScope, auth};

/// Generates one `#[tokio::test]` per conformance check. `$factory` is an
/// async fn returning `(store, guard)`; the guard (a temp dir, a database) is
/// dropped when the test ends.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::conformance_suite!(@tests $factory;
            tenants_and_keys_round_trip,
            revoked_keys_no_longer_authenticate,
            keys_expire_rotate_with_a_grace_and_note_their_last_use,
            enqueue_then_read_back,
            scheduled_jobs_wait_for_run_at,
            idempotent_enqueue_replays_and_refuses_reuse,
            idempotency_keys_expire_after_the_window,
            batch_enqueue_is_all_or_nothing,
            lease_order_is_priority_then_run_at_then_fifo,
            a_batch_is_leased_in_the_order_it_was_enqueued,
            concurrent_leases_never_share_a_job,
            complete_needs_the_current_lease,
            a_batch_of_completions_is_judged_item_by_item,
            failures_retry_with_backoff_then_die,
            expired_leases_are_failed_attempts,
            heartbeat_extends_the_lease,
            a_released_job_is_ready_at_once_and_its_attempt_is_not_spent,
            cancel_and_retry_are_operator_actions,
            tenants_never_see_each_other,
            listing_pages_newest_first_with_filters,
            steps_are_memoized_and_the_first_checkpoint_wins,
            a_step_started_but_not_checkpointed_is_uncertain_next_time,
            a_batch_of_steps_is_judged_item_by_item_in_order,
            fenced_workers_cannot_touch_steps_waits_or_children,
            sleeps_park_the_job_until_the_timer_fires,
            a_signal_wakes_a_waiting_job_and_a_wait_times_out_without_one,
            a_signal_delivered_before_the_wait_is_kept_for_it,
            finished_jobs_take_no_signals,
            a_child_spawned_twice_is_one_child,
            workflow_limits_are_enforced,
            a_waiting_job_can_be_cancelled,
            every_change_leaves_one_audit_record,
            a_refused_change_leaves_no_record,
            retention_keeps_the_remaining_chain_verifiable,
            audit_queries_filter_by_time_action_actor_and_job,
            a_checkpoint_beyond_the_log_is_a_truncation,
            failed_authentication_is_recorded,
            audit_signing_keys_are_registered_once_and_rotated_on_purpose,
            tenant_limits_and_queue_retention_are_kept,
            finished_jobs_are_pruned_after_their_retention_with_everything_they_hold,
            a_finished_child_is_kept_while_its_parent_is_kept,
            sources_keep_their_secrets_and_rotate_without_a_gap,
            an_event_becomes_one_job_however_often_it_arrives,
            events_list_replay_and_stay_within_their_tenant,
            concurrent_deliveries_of_one_event_make_one_job,
            policies_merge_validate_and_are_audited,
            a_paused_queue_grants_no_lease_until_resumed,
            concurrency_counts_running_jobs_and_frees_slots_as_they_end,
            key_concurrency_limits_each_key_and_lets_other_keys_pass,
            rates_admit_the_burst_then_the_steady_rate,
            key_rates_hold_each_key_to_its_own_rate,
            fairness_serves_a_small_key_behind_a_flood,
            retries_over_the_budget_are_deferred_not_failed,
            a_breaker_opens_probes_and_closes,
            a_resource_limits_its_jobs_across_queues,
            queue_overviews_count_held_jobs_by_reason,
            singletons_skip_or_replace_the_unfinished_job,
            debounce_runs_after_the_last_enqueue_and_never_past_its_max,
            concurrent_enqueues_of_one_singleton_make_one_job,
            a_held_resource_does_not_stop_the_jobs_behind_it,
            only_probes_decide_a_half_open_breaker,
            a_retried_singleton_does_not_take_a_key_already_held,
            operator_reasons_are_audited_with_the_action,
            an_uncertain_step_resolved_as_succeeded_is_replayed_not_run,
            an_uncertain_step_resolved_for_reexecution_runs_afresh,
            an_uncertain_step_resolved_as_failed_ends_the_job,
            a_replay_is_a_new_linked_job_and_the_original_is_untouched,
            the_dashboard_reads_what_needs_attention,
            a_bulk_retry_walks_every_matching_job_in_batches,
            a_bulk_operation_can_be_stopped_and_a_tenant_runs_a_bounded_number,
            a_bulk_walk_reaches_jobs_that_change_state_and_keeps_singletons_single,
        );
    };
    (@tests $factory:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $factory().await;
                $crate::conformance::$name(&store).await;
            }
        )*
    };
}

/// An arbitrary fixed start time, far from the epoch.
pub fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("valid")
}

pub fn at(seconds_after_t0: u64) -> Timestamp {
    t0().saturating_add(Duration::from_secs(seconds_after_t0))
        .expect("valid")
}

/// A new tenant with a unique name, and a worker key id within it.
pub async fn new_tenant(store: &impl Store) -> (TenantScope, KeyId) {
    let id = TenantId(uuid::Uuid::now_v7());
    let name = TenantName::new(format!("t-{}", id.0.simple())).expect("valid name");
    let tenant = store.create_tenant(id, &name, t0()).await.expect("create tenant");
    let scope = auth::local_operator(&tenant);
    let key_id = KeyId::from_random(*uuid::Uuid::now_v7().as_bytes().last_chunk::<8>().expect("16 bytes"));
    let key = NewApiKey {
        key_id: key_id.clone(),
        name: "worker".into(),
        role: Role::Worker,
        secret_hash: [0; 32],
        expires_at: None,
    };
    store.create_key(&scope, key, t0()).await.expect("create key");
    (scope, key_id)
}

pub fn spec(queue: &str) -> JobSpec {
    request(queue, "{}")
        .validate(&Limits::default(), [0; 32], t0())
        .expect("valid")
}

pub fn request(queue: &str, payload: &str) -> EnqueueRequest {
    EnqueueRequest {
        queue: queue.into(),
        payload: payload.into(),
        ..Default::default()
    }
}

pub fn new_job(spec: JobSpec) -> NewJob {
    NewJob {
        id: JobId(uuid::Uuid::now_v7()),
        spec,
    }
}

pub async fn enqueue_one(store: &impl Store, scope: &TenantScope, spec: JobSpec, now: Timestamp) -> Job {
    let mut created = store
        .enqueue(scope, vec![new_job(spec)], Limits::default().dedup_window, now)
        .await
        .expect("enqueue");
    created.remove(0).job
}

pub fn lease_request(queues: &[&str], max_jobs: u32, key_id: &KeyId) -> LeaseRequest {
    LeaseRequest {
        queues: queues.iter().map(|q| QueueName::new(*q).expect("valid")).collect(),
        max_jobs,
        worker_id: WorkerId::new("conformance-worker").expect("valid"),
        key_id: key_id.clone(),
        ttl: Duration::from_secs(30),
        token_seed: 42,
    }
}

/// Leases and keeps only the jobs (most checks do not look at steps).
pub async fn lease_jobs(store: &impl Store, scope: &TenantScope, request: LeaseRequest, now: Timestamp) -> Vec<Job> {
    let leased = store.lease(scope, request, now).await.expect("lease");
    leased.into_iter().map(|leased| leased.job).collect()
}

pub fn token(job: &Job) -> String {
    job.lease.as_ref().expect("leased").token.clone()
}
