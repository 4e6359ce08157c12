//! Operator actions: reasons in the audit log, uncertain steps settled by
//! hand, and replays that leave the original alone.

use steadfast_core::lifecycle::StepResolution;
use steadfast_core::{AttemptOutcome, JobState, Reason, RetryPolicy, SignalName, StepName, StepState};

use super::audit::job_records;
use super::workflows::lease_one;
use super::*;
use crate::{StoreError, WorkflowLimits};

const LIMITS: WorkflowLimits = WorkflowLimits {
    max_steps: 1000,
    max_pending_signals: 100,
    max_children: 1000,
};

fn reason(text: &str) -> Reason {
    Reason::new(text).unwrap()
}

fn step(name: &str) -> StepName {
    StepName::new(name).unwrap()
}

/// The summaries of a job's audit records with `action`, oldest first.
async fn summaries(store: &impl Store, scope: &TenantScope, job: JobId, action: &str) -> Vec<serde_json::Value> {
    job_records(store, scope, job)
        .await
        .into_iter()
        .filter(|r| r.action == action)
        .map(|r| serde_json::from_str(&r.summary).unwrap())
        .collect()
}

/// A job of `queue` whose attempt 1 started step `charge` and then lost
/// its lease: the step is uncertain and the job queued again.
async fn job_with_an_uncertain_step(store: &impl Store, scope: &TenantScope, key: &KeyId, queue: &str) -> Job {
    let job = enqueue_one(store, scope, spec(queue), t0()).await;
    let leased = lease_jobs(store, scope, lease_request(&[queue], 1, key), at(1))
        .await
        .remove(0);
    store
        .start_step(scope, job.id, &token(&leased), step("charge"), LIMITS, at(2))
        .await
        .unwrap();
    let expiry = leased.lease.as_ref().unwrap().expires_at;
    let no_backoff = RetryPolicy {
        base: Duration::ZERO,
        cap: Duration::ZERO,
    };
    store.expire_leases(expiry, no_backoff, 1, 10).await.unwrap();
    let record = store.job(scope, job.id).await.unwrap().unwrap();
    assert_eq!(record.steps[0].state(&record.job), StepState::Uncertain);
    record.job
}

pub async fn operator_reasons_are_audited_with_the_action(store: &impl Store) {
    let (scope, _key) = new_tenant(store).await;
    let job = enqueue_one(store, &scope, spec("ops-reasons"), t0()).await;
    store
        .cancel(&scope, job.id, Some(&reason("customer withdrew")), at(1))
        .await
        .unwrap();
    store
        .retry(&scope, job.id, Some(&reason("customer came back")), at(2))
        .await
        .unwrap();
    store
        .signal(
            &scope,
            job.id,
            SignalName::new("approval").unwrap(),
            r#"{"approved":true}"#.into(),
            Some(&reason("checked the invoice")),
            LIMITS,
            at(3),
        )
        .await
        .unwrap();
    store.cancel(&scope, job.id, None, at(4)).await.unwrap();

    let cancelled = summaries(store, &scope, job.id, "job.cancelled").await;
    assert_eq!(cancelled[0]["reason"], "customer withdrew");
    assert!(
        cancelled[1].get("reason").is_none(),
        "no reason, no field: {}",
        cancelled[1]
    );
    assert_eq!(
        summaries(store, &scope, job.id, "job.retried").await[0]["reason"],
        "customer came back"
    );
    let signal = &summaries(store, &scope, job.id, "signal.received").await[0];
    assert_eq!(
        (&signal["reason"], &signal["payload"]),
        (
            &serde_json::json!("checked the invoice"),
            &serde_json::json!({"approved": true})
        )
    );
}

pub async fn an_uncertain_step_resolved_as_succeeded_is_replayed_not_run(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let job = job_with_an_uncertain_step(store, &scope, &key, "ops-resolve-ok").await;
    let succeeded = StepResolution::Succeeded {
        output: r#"{"charge":"ch_1"}"#.into(),
    };
    let why = reason("the provider shows ch_1");
    assert_eq!(
        store
            .resolve_step(&scope, job.id, step("refund"), succeeded.clone(), &why, at(40))
            .await
            .err(),
        Some(StoreError::NotFound),
        "a step the job never started"
    );
    let after = store
        .resolve_step(&scope, job.id, step("charge"), succeeded.clone(), &why, at(40))
        .await
        .unwrap();
    assert_eq!(after.state, JobState::Queued, "succeeded leaves the job as it was");
    assert!(
        matches!(
            store
                .resolve_step(&scope, job.id, step("charge"), succeeded, &why, at(41))
                .await,
            Err(StoreError::InvalidState { .. })
        ),
        "a completed step is not uncertain"
    );

    let second = lease_one(store, &scope, &key, "ops-resolve-ok", at(42)).await;
    let charge = &second.steps[0];
    assert_eq!(charge.state(&second.job), StepState::Completed);
    assert_eq!(charge.output.as_deref(), Some(r#"{"charge":"ch_1"}"#));
    assert!(second.uncertain_attempts.is_empty());
    let record = &summaries(store, &scope, job.id, "step.resolved").await[0];
    assert_eq!(
        (
            &record["step"],
            &record["outcome"],
            &record["reason"],
            &record["output"]
        ),
        (
            &serde_json::json!("charge"),
            &serde_json::json!("succeeded"),
            &serde_json::json!("the provider shows ch_1"),
            &serde_json::json!({"charge": "ch_1"})
        )
    );
}

pub async fn an_uncertain_step_resolved_for_reexecution_runs_afresh(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let job = job_with_an_uncertain_step(store, &scope, &key, "ops-resolve-again").await;
    store
        .resolve_step(
            &scope,
            job.id,
            step("charge"),
            StepResolution::Reexecute,
            &reason("no charge at the provider"),
            at(40),
        )
        .await
        .unwrap();
    let record = store.job(&scope, job.id).await.unwrap().unwrap();
    assert!(record.steps.is_empty(), "the marker is gone: {:?}", record.steps);
    let second = lease_one(store, &scope, &key, "ops-resolve-again", at(41)).await;
    assert!(second.steps.is_empty() && second.uncertain_attempts.is_empty());
}

pub async fn an_uncertain_step_resolved_as_failed_ends_the_job(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let job = job_with_an_uncertain_step(store, &scope, &key, "ops-resolve-failed").await;
    // The next attempt is running when the operator decides.
    let running = lease_jobs(store, &scope, lease_request(&["ops-resolve-failed"], 1, &key), at(40))
        .await
        .remove(0);
    let after = store
        .resolve_step(
            &scope,
            job.id,
            step("charge"),
            StepResolution::Failed,
            &reason("the card was declined"),
            at(41),
        )
        .await
        .unwrap();
    assert_eq!(after.state, JobState::Dead);
    assert_eq!(
        after.last_error.as_ref().and_then(|e| e.kind.as_deref()),
        Some("step_failed")
    );
    assert_eq!(
        store
            .complete(&scope, job.id, &token(&running), "1".into(), at(42))
            .await
            .err(),
        Some(StoreError::LeaseLost),
        "the running attempt is fenced"
    );
    let record = store.job(&scope, job.id).await.unwrap().unwrap();
    assert!(record.steps.is_empty());
    assert_eq!(
        record.attempts.last().map(|a| a.outcome),
        Some(AttemptOutcome::Cancelled)
    );
    // A succeeded job is refused: nothing of it runs again.
    let done = enqueue_one(store, &scope, spec("ops-resolve-done"), at(50)).await;
    let leased = lease_jobs(store, &scope, lease_request(&["ops-resolve-done"], 1, &key), at(51))
        .await
        .remove(0);
    store
        .start_step(&scope, done.id, &token(&leased), step("charge"), LIMITS, at(52))
        .await
        .unwrap();
    store.cancel(&scope, done.id, None, at(53)).await.unwrap();
    store.retry(&scope, done.id, None, at(54)).await.unwrap();
    let again = lease_jobs(store, &scope, lease_request(&["ops-resolve-done"], 1, &key), at(55))
        .await
        .remove(0);
    store
        .complete(&scope, done.id, &token(&again), "1".into(), at(56))
        .await
        .unwrap();
    assert!(matches!(
        store
            .resolve_step(
                &scope,
                done.id,
                step("charge"),
                StepResolution::Reexecute,
                &reason("x"),
                at(57)
            )
            .await,
        Err(StoreError::InvalidState { .. })
    ));
}

pub async fn a_replay_is_a_new_linked_job_and_the_original_is_untouched(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let original = enqueue_one(store, &scope, spec("ops-replay"), t0()).await;
    let leased = lease_jobs(store, &scope, lease_request(&["ops-replay"], 1, &key), at(1))
        .await
        .remove(0);
    store
        .complete(&scope, original.id, &token(&leased), r#"{"sent":1}"#.into(), at(2))
        .await
        .unwrap();
    let before = store.job(&scope, original.id).await.unwrap().unwrap();

    let replay_id = JobId(uuid::Uuid::now_v7());
    let replay = store
        .replay(
            &scope,
            original.id,
            replay_id,
            Some((r#"{"fixed":true}"#.into(), None)),
            &reason("the template was wrong"),
            at(3),
        )
        .await
        .unwrap();
    assert_eq!(
        (replay.id, replay.replay_of, replay.state, replay.payload.as_str()),
        (replay_id, Some(original.id), JobState::Queued, r#"{"fixed":true}"#)
    );
    assert_eq!(
        (replay.queue.clone(), replay.max_attempts),
        (original.queue.clone(), original.max_attempts)
    );
    let stored = store.job(&scope, replay_id).await.unwrap().unwrap();
    assert_eq!(stored.job.replay_of, Some(original.id), "the link is stored");
    assert_eq!(store.job(&scope, original.id).await.unwrap().unwrap(), before);
    let leased = lease_jobs(store, &scope, lease_request(&["ops-replay"], 1, &key), at(4)).await;
    assert_eq!(leased[0].id, replay_id, "the replay is leased like any job");

    let unchanged = store
        .replay(
            &scope,
            original.id,
            JobId(uuid::Uuid::now_v7()),
            None,
            &reason("again"),
            at(5),
        )
        .await
        .unwrap();
    assert_eq!(unchanged.payload, original.payload, "no payload: the original's");
    let replayed = summaries(store, &scope, original.id, "job.replayed").await;
    assert_eq!(replayed.len(), 2);
    assert_eq!(replayed[0]["replay"], replay_id.to_string());
    assert_eq!(replayed[0]["reason"], "the template was wrong");
    assert_eq!(replayed[0]["payload_changed"], true);
    assert_eq!(
        store
            .replay(
                &scope,
                JobId(uuid::Uuid::now_v7()),
                JobId(uuid::Uuid::now_v7()),
                None,
                &reason("x"),
                at(6)
            )
            .await
            .err(),
        Some(StoreError::NotFound)
    );
}
