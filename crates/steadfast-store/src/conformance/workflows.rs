use steadfast_core::lifecycle::StepStart;
use steadfast_core::{AttemptOutcome, JobState, RetryPolicy, SignalName, StepName, StepState, WaitFor};

use super::audit::actions;
use super::*;
use crate::{LeasedJob, StepAction, StepDone, StepOp, StoreError, Waited, WorkflowLimits};

fn step(name: &str) -> StepName {
    StepName::new(name).unwrap()
}

fn signal(name: &str) -> SignalName {
    SignalName::new(name).unwrap()
}

/// Leases the one ready job of `queue`, with its steps and uncertain attempts.
pub(super) async fn lease_one(
    store: &impl Store,
    scope: &TenantScope,
    key: &KeyId,
    queue: &str,
    now: Timestamp,
) -> LeasedJob {
    let mut leased = store.lease(scope, lease_request(&[queue], 1, key), now).await.unwrap();
    assert_eq!(leased.len(), 1, "expected a job to lease");
    leased.remove(0)
}

const LIMITS: WorkflowLimits = WorkflowLimits {
    max_steps: 1000,
    max_pending_signals: 100,
    max_children: 1000,
};

pub async fn a_released_job_is_ready_at_once_and_its_attempt_is_not_spent(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let job = enqueue_one(store, &scope, spec("handed-back"), t0()).await;
    let leased = lease_jobs(store, &scope, lease_request(&["handed-back"], 1, &key), at(1))
        .await
        .remove(0);
    assert_eq!(
        store.release(&scope, job.id, "lt_wrong", at(2)).await.err(),
        Some(StoreError::LeaseLost),
        "only the lease holder hands a job back"
    );
    store
        .start_step(&scope, job.id, &token(&leased), step("charge"), LIMITS, at(2))
        .await
        .unwrap();
    let released = store.release(&scope, job.id, &token(&leased), at(3)).await.unwrap();
    assert_eq!(released.job.state, JobState::Queued);
    assert_eq!(
        released.job.run_at, job.run_at,
        "ready at once, in its old place, whatever the backoff"
    );
    assert_eq!(
        released.job.attempts_left(),
        leased.attempts_left() + 1,
        "the attempt is not spent"
    );
    assert_eq!(released.job.last_error, None, "a hand-back is not a failure");
    assert_eq!(released.attempt.map(|a| a.outcome), Some(AttemptOutcome::Released));
    assert_eq!(
        store.release(&scope, job.id, &token(&leased), at(3)).await.err(),
        Some(StoreError::LeaseLost),
        "a lease is handed back once"
    );

    let again = lease_jobs(store, &scope, lease_request(&["handed-back"], 1, &key), at(4)).await;
    let record = store.job(&scope, job.id).await.unwrap().unwrap();
    assert_eq!(again[0].attempt, 2);
    assert_eq!(
        record.steps[0].state(&record.job),
        StepState::Uncertain,
        "its started step may have run"
    );
    assert_eq!(
        record.attempts.iter().map(|a| a.outcome).collect::<Vec<_>>(),
        [AttemptOutcome::Released]
    );
    let actions = actions(store, &scope, job.id).await;
    assert!(actions.iter().any(|action| action == "job.released"), "{actions:?}");
}

pub async fn steps_are_memoized_and_the_first_checkpoint_wins(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let job = enqueue_one(store, &scope, spec("wf"), t0()).await;
    let first = lease_one(store, &scope, &key, "wf", at(1)).await.job;
    let written = store
        .checkpoint_step(&scope, job.id, &token(&first), step("a"), "1".into(), LIMITS, at(2))
        .await
        .unwrap();
    assert!(written.first);
    let again = store
        .checkpoint_step(&scope, job.id, &token(&first), step("a"), "2".into(), LIMITS, at(3))
        .await
        .unwrap();
    assert!(!again.first);
    assert_eq!(again.step.output.as_deref(), Some("1"), "the first checkpoint wins");

    // The attempt is lost; the next one resumes after the completed step.
    let expiry = first.lease.as_ref().unwrap().expires_at;
    store
        .expire_leases(
            expiry,
            RetryPolicy {
                base: Duration::ZERO,
                cap: Duration::ZERO,
            },
            1,
            10,
        )
        .await
        .unwrap();
    let second = lease_one(store, &scope, &key, "wf", expiry).await;
    assert_eq!(second.job.attempt, 2);
    assert_eq!(second.steps.len(), 1);
    assert_eq!(
        (second.steps[0].name.as_str(), second.steps[0].output.as_deref()),
        ("a", Some("1"))
    );
    assert_eq!(second.steps[0].state(&second.job), StepState::Completed);
    let replay = store
        .checkpoint_step(
            &scope,
            job.id,
            &token(&second.job),
            step("a"),
            "3".into(),
            LIMITS,
            expiry,
        )
        .await
        .unwrap();
    assert_eq!(
        (replay.first, replay.step.output.as_deref(), replay.step.attempt),
        (false, Some("1"), 1)
    );
    let started = store
        .start_step(&scope, job.id, &token(&second.job), step("a"), LIMITS, expiry)
        .await
        .unwrap();
    assert!(
        matches!(started, StepStart::AlreadyCompleted(_)),
        "a completed step is never started again"
    );

    let record = store.job(&scope, job.id).await.unwrap().unwrap();
    assert_eq!(record.steps.len(), 1);
    assert_eq!(record.steps[0].completed_at, Some(at(2)));
}

pub async fn a_step_started_but_not_checkpointed_is_uncertain_next_time(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let job = enqueue_one(store, &scope, spec("pay"), t0()).await;
    let first = lease_one(store, &scope, &key, "pay", at(1)).await.job;
    let started = store
        .start_step(&scope, job.id, &token(&first), step("charge"), LIMITS, at(2))
        .await
        .unwrap();
    assert!(matches!(started, StepStart::Started(_)));
    let record = store.job(&scope, job.id).await.unwrap().unwrap();
    assert_eq!(record.steps[0].state(&record.job), StepState::Started);

    // The worker dies between the side effect and the checkpoint.
    let expiry = first.lease.as_ref().unwrap().expires_at;
    store
        .expire_leases(
            expiry,
            RetryPolicy {
                base: Duration::ZERO,
                cap: Duration::ZERO,
            },
            1,
            10,
        )
        .await
        .unwrap();
    let record = store.job(&scope, job.id).await.unwrap().unwrap();
    assert_eq!(record.steps[0].state(&record.job), StepState::Uncertain);

    let second = lease_one(store, &scope, &key, "pay", expiry).await;
    assert_eq!(second.steps[0].state(&second.job), StepState::Uncertain);
    assert_eq!(second.uncertain_attempts.len(), 1);
    let previous = &second.uncertain_attempts[0];
    assert_eq!((previous.number, previous.outcome), (1, AttemptOutcome::LeaseExpired));
    assert_eq!(previous.worker_id.as_str(), "conformance-worker");

    // After reconciling, the new attempt starts the step again and checkpoints it.
    let restarted = store
        .start_step(&scope, job.id, &token(&second.job), step("charge"), LIMITS, expiry)
        .await
        .unwrap();
    assert!(matches!(restarted, StepStart::Started(ref s) if s.attempt == 2));
    let done = store
        .checkpoint_step(
            &scope,
            job.id,
            &token(&second.job),
            step("charge"),
            r#"{"charged":true}"#.into(),
            LIMITS,
            expiry,
        )
        .await
        .unwrap();
    assert!(done.first);
    let record = store.job(&scope, job.id).await.unwrap().unwrap();
    assert_eq!(record.steps[0].state(&record.job), StepState::Completed);
}

/// Many jobs' steps in one call: each item is answered as the single call
/// would answer it, in order, so a later item sees an earlier one's step.
pub async fn a_batch_of_steps_is_judged_item_by_item_in_order(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let (other, other_key) = new_tenant(store).await;
    let a = enqueue_one(store, &scope, spec("batch"), t0()).await;
    let b = enqueue_one(store, &scope, spec("batch"), t0()).await;
    let foreign = enqueue_one(store, &other, spec("batch"), t0()).await;
    let leased = lease_jobs(store, &scope, lease_request(&["batch"], 2, &key), at(1)).await;
    let token_of = |id| token(leased.iter().find(|job| job.id == id).expect("leased"));
    let foreign_token = token(&lease_one(store, &other, &other_key, "batch", at(1)).await.job);
    let op = |id, token: String, name: &str, action| StepOp {
        id,
        token,
        step: step(name),
        action,
    };
    let checkpoint = |output: &str| StepAction::Checkpoint { output: output.into() };
    let tight = WorkflowLimits { max_steps: 2, ..LIMITS };

    let results = store
        .step_many(
            &scope,
            vec![
                op(a.id, token_of(a.id), "one", StepAction::Start),
                op(b.id, format!("{}x", token_of(b.id)), "one", StepAction::Start),
                op(a.id, token_of(a.id), "one", checkpoint("1")),
                op(a.id, token_of(a.id), "one", checkpoint("2")),
                op(a.id, token_of(a.id), "two", checkpoint("3")),
                op(a.id, token_of(a.id), "three", StepAction::Start),
                op(foreign.id, foreign_token, "one", StepAction::Start),
                op(b.id, token_of(b.id), "one", checkpoint("4")),
            ],
            tight,
            at(2),
        )
        .await
        .unwrap();
    assert_eq!(results.len(), 8);
    assert!(matches!(&results[0], Ok(StepDone::Started(StepStart::Started(s))) if s.name.as_str() == "one"));
    assert_eq!(
        results[1],
        Err(StoreError::LeaseLost),
        "a stale token rejects only its item"
    );
    let checkpointed = |result: &Result<StepDone, StoreError>| match result {
        Ok(StepDone::Checkpointed(c)) => (c.first, c.step.output.clone()),
        other => panic!("expected a checkpoint, got {other:?}"),
    };
    assert_eq!(checkpointed(&results[2]), (true, Some("1".into())));
    assert_eq!(
        checkpointed(&results[3]),
        (false, Some("1".into())),
        "an earlier item's checkpoint won"
    );
    assert_eq!(checkpointed(&results[4]), (true, Some("3".into())));
    assert_eq!(
        results[5],
        Err(StoreError::LimitExceeded {
            what: "steps per job",
            limit: 2
        }),
        "steps recorded earlier in the batch count against the limit"
    );
    assert_eq!(
        results[6],
        Err(StoreError::NotFound),
        "another tenant's job is not there"
    );
    assert_eq!(checkpointed(&results[7]), (true, Some("4".into())));

    let record = store.job(&scope, a.id).await.unwrap().unwrap();
    let steps: Vec<_> = record
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.output.as_deref(), s.state(&record.job)))
        .collect();
    assert_eq!(
        steps,
        [
            ("one", Some("1"), StepState::Completed),
            ("two", Some("3"), StepState::Completed)
        ]
    );
    assert_eq!(
        actions(store, &scope, a.id).await,
        [
            "job.enqueued",
            "job.leased",
            "step.started",
            "step.completed",
            "step.completed"
        ]
    );
    assert_eq!(
        actions(store, &scope, b.id).await,
        ["job.enqueued", "job.leased", "step.completed"],
        "the refused start left no record"
    );
    let foreign_record = store.job(&other, foreign.id).await.unwrap().unwrap();
    assert!(
        foreign_record.steps.is_empty(),
        "nothing was written to another tenant's job"
    );

    // Steps keep the order they were first recorded in, however their
    // writes interleave within a batch.
    let results = store
        .step_many(
            &scope,
            vec![
                op(b.id, token_of(b.id), "x", StepAction::Start),
                op(b.id, token_of(b.id), "y", StepAction::Start),
                op(b.id, token_of(b.id), "x", checkpoint("5")),
                op(b.id, token_of(b.id), "z", checkpoint("6")),
            ],
            LIMITS,
            at(3),
        )
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let record = store.job(&scope, b.id).await.unwrap().unwrap();
    let steps: Vec<_> = record
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.state(&record.job)))
        .collect();
    assert_eq!(
        steps,
        [
            ("one", StepState::Completed),
            ("x", StepState::Completed),
            ("y", StepState::Started),
            ("z", StepState::Completed)
        ]
    );
}

pub async fn fenced_workers_cannot_touch_steps_waits_or_children(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let job = enqueue_one(store, &scope, spec("fence"), t0()).await;
    let leased = lease_one(store, &scope, &key, "fence", at(1)).await.job;
    let stale = format!("{}x", token(&leased));
    let lost = |result: Result<_, StoreError>| matches!(result, Err(StoreError::LeaseLost));
    assert!(lost(
        store
            .start_step(&scope, job.id, &stale, step("s"), LIMITS, at(2))
            .await
            .map(|_| ())
    ));
    assert!(lost(
        store
            .checkpoint_step(&scope, job.id, &stale, step("s"), "1".into(), LIMITS, at(2))
            .await
            .map(|_| ())
    ));
    assert!(lost(
        store
            .wait(&scope, job.id, &stale, step("w"), WaitFor::Until(at(9)), LIMITS, at(2))
            .await
            .map(|_| ())
    ));
    let spawned = store
        .spawn_child(&scope, job.id, &stale, step("c"), new_job(spec("kids")), LIMITS, at(2))
        .await;
    assert!(lost(spawned.map(|_| ())));
    let expired = leased.lease.as_ref().unwrap().expires_at;
    let lapsed = store
        .checkpoint_step(&scope, job.id, &token(&leased), step("s"), "1".into(), LIMITS, expired)
        .await;
    assert!(
        lost(lapsed.map(|_| ())),
        "a lapsed lease cannot checkpoint, swept or not"
    );
    assert!(store.job(&scope, job.id).await.unwrap().unwrap().steps.is_empty());
}

pub async fn sleeps_park_the_job_until_the_timer_fires(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let job = enqueue_one(store, &scope, spec("sleepy"), t0()).await;
    let first = lease_one(store, &scope, &key, "sleepy", at(1)).await.job;
    let attempts_left = first.attempts_left();
    let waited = store
        .wait(
            &scope,
            job.id,
            &token(&first),
            step("sleep:cool-off"),
            WaitFor::Until(at(100)),
            LIMITS,
            at(2),
        )
        .await;
    let Ok(Waited::Suspended(parked)) = waited else {
        panic!("expected to suspend: {waited:?}")
    };
    assert_eq!((parked.state, parked.lease.is_none()), (JobState::Waiting, true));
    assert!(
        lease_jobs(store, &scope, lease_request(&["sleepy"], 1, &key), at(50))
            .await
            .is_empty()
    );
    assert!(store.next_due().await.unwrap().is_some_and(|due| due <= at(100)));
    assert_eq!(store.fire_timers(at(99), 10).await.unwrap().count, 0);
    let fired = store.fire_timers(at(100), 10).await.unwrap();
    assert_eq!(fired.count, 1);
    assert!(fired.ready_queues.contains(&(scope.tenant_id(), parked.queue.clone())));

    let resumed = lease_one(store, &scope, &key, "sleepy", at(100)).await;
    assert_eq!(resumed.job.attempt, 2);
    assert_eq!(
        resumed.job.attempts_left(),
        attempts_left,
        "a suspension is not a failed attempt"
    );
    assert_eq!(resumed.steps[0].output.as_deref(), Some(r#"{"outcome":"slept"}"#));
    let replay = store
        .wait(
            &scope,
            job.id,
            &token(&resumed.job),
            step("sleep:cool-off"),
            WaitFor::Until(at(300)),
            LIMITS,
            at(101),
        )
        .await;
    assert!(
        matches!(replay, Ok(Waited::Completed(_))),
        "a finished sleep is not slept again"
    );
    let record = store.job(&scope, job.id).await.unwrap().unwrap();
    assert_eq!(record.attempts[0].outcome, AttemptOutcome::Suspended);
}

pub async fn a_signal_wakes_a_waiting_job_and_a_wait_times_out_without_one(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let approval = WaitFor::Signal {
        name: signal("approve"),
        deadline: Some(at(50)),
    };
    let job = enqueue_one(store, &scope, spec("approvals"), t0()).await;
    let leased = lease_one(store, &scope, &key, "approvals", at(1)).await.job;
    let waited = store
        .wait(
            &scope,
            job.id,
            &token(&leased),
            step("signal:approve"),
            approval.clone(),
            LIMITS,
            at(2),
        )
        .await;
    assert!(matches!(waited, Ok(Waited::Suspended(_))));
    let signalled = store
        .signal(
            &scope,
            job.id,
            signal("approve"),
            r#"{"by":"ana"}"#.into(),
            None,
            LIMITS,
            at(3),
        )
        .await
        .unwrap();
    assert!(signalled.woke);
    assert_eq!(signalled.job.state, JobState::Queued);
    let resumed = lease_one(store, &scope, &key, "approvals", at(4)).await;
    assert_eq!(
        resumed.steps[0].output.as_deref(),
        Some(r#"{"outcome":"signal","payload":{"by":"ana"}}"#)
    );

    let other = enqueue_one(store, &scope, spec("approvals"), at(5)).await;
    let leased = lease_one(store, &scope, &key, "approvals", at(5)).await.job;
    assert_eq!(leased.id, other.id);
    let waited = store
        .wait(
            &scope,
            other.id,
            &token(&leased),
            step("signal:approve"),
            approval,
            LIMITS,
            at(6),
        )
        .await;
    assert!(matches!(waited, Ok(Waited::Suspended(_))));
    assert_eq!(store.fire_timers(at(50), 10).await.unwrap().count, 1);
    let timed_out = lease_one(store, &scope, &key, "approvals", at(50)).await;
    assert_eq!(timed_out.steps[0].output.as_deref(), Some(r#"{"outcome":"timed_out"}"#));
}

pub async fn a_signal_delivered_before_the_wait_is_kept_for_it(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let job = enqueue_one(store, &scope, spec("early"), t0()).await;
    let early = store
        .signal(&scope, job.id, signal("go"), "1".into(), None, LIMITS, at(1))
        .await
        .unwrap();
    assert!(!early.woke);
    assert_eq!(early.job.state, JobState::Queued);
    let leased = lease_one(store, &scope, &key, "early", at(2)).await.job;
    let go = WaitFor::Signal {
        name: signal("go"),
        deadline: None,
    };
    let waited = store
        .wait(
            &scope,
            job.id,
            &token(&leased),
            step("first"),
            go.clone(),
            LIMITS,
            at(3),
        )
        .await
        .unwrap();
    let Waited::Completed(step_done) = waited else {
        panic!("the waiting signal completes the step at once")
    };
    assert_eq!(step_done.output.as_deref(), Some(r#"{"outcome":"signal","payload":1}"#));
    let record = store.job(&scope, job.id).await.unwrap().unwrap();
    assert_eq!(record.signals.len(), 1);
    assert_eq!(
        record.signals[0].consumed_at,
        Some(at(3)),
        "each signal is consumed once"
    );
    let second = store
        .wait(&scope, job.id, &token(&leased), step("second"), go, LIMITS, at(4))
        .await
        .unwrap();
    assert!(
        matches!(second, Waited::Suspended(_)),
        "a consumed signal does not satisfy another wait"
    );
}

pub async fn finished_jobs_take_no_signals(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let job = enqueue_one(store, &scope, spec("done"), t0()).await;
    let leased = lease_one(store, &scope, &key, "done", at(1)).await.job;
    store
        .complete(&scope, job.id, &token(&leased), "1".into(), at(2))
        .await
        .unwrap();
    let late = store
        .signal(&scope, job.id, signal("go"), "1".into(), None, LIMITS, at(3))
        .await;
    assert!(matches!(
        late,
        Err(StoreError::InvalidState {
            state: JobState::Succeeded,
            ..
        })
    ));
    let (other_tenant, _) = new_tenant(store).await;
    let foreign = store
        .signal(&other_tenant, job.id, signal("go"), "1".into(), None, LIMITS, at(3))
        .await;
    assert_eq!(foreign, Err(StoreError::NotFound));
}

pub async fn a_child_spawned_twice_is_one_child(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let parent = enqueue_one(store, &scope, spec("parents"), t0()).await;
    let first = lease_one(store, &scope, &key, "parents", at(1)).await.job;
    let child = store
        .spawn_child(
            &scope,
            parent.id,
            &token(&first),
            step("fan-out"),
            new_job(spec("kids")),
            LIMITS,
            at(2),
        )
        .await;
    let child = child.unwrap();
    assert!(!child.replayed);
    assert_eq!(
        child.job.parent.as_ref().map(|p| (p.job_id, p.step.as_str())),
        Some((parent.id, "fan-out"))
    );
    let again = store
        .spawn_child(
            &scope,
            parent.id,
            &token(&first),
            step("fan-out"),
            new_job(spec("kids")),
            LIMITS,
            at(3),
        )
        .await;
    let again = again.unwrap();
    assert!(again.replayed);
    assert_eq!(again.job.id, child.job.id);

    let expiry = first.lease.as_ref().unwrap().expires_at;
    store
        .expire_leases(
            expiry,
            RetryPolicy {
                base: Duration::ZERO,
                cap: Duration::ZERO,
            },
            1,
            10,
        )
        .await
        .unwrap();
    let second = lease_one(store, &scope, &key, "parents", expiry).await.job;
    let replay = store
        .spawn_child(
            &scope,
            parent.id,
            &token(&second),
            step("fan-out"),
            new_job(spec("kids")),
            LIMITS,
            expiry,
        )
        .await;
    assert_eq!(
        replay.unwrap().job.id,
        child.job.id,
        "a later attempt gets the same child"
    );
    let record = store.job(&scope, parent.id).await.unwrap().unwrap();
    assert_eq!(
        record.children.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![child.job.id]
    );
}

pub async fn workflow_limits_are_enforced(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let tight = WorkflowLimits {
        max_steps: 2,
        max_pending_signals: 1,
        max_children: 1,
    };
    let job = enqueue_one(store, &scope, spec("tight"), t0()).await;
    let leased = lease_one(store, &scope, &key, "tight", at(1)).await.job;
    for name in ["one", "two"] {
        store
            .checkpoint_step(&scope, job.id, &token(&leased), step(name), "1".into(), tight, at(2))
            .await
            .unwrap();
    }
    let third = store
        .checkpoint_step(&scope, job.id, &token(&leased), step("three"), "1".into(), tight, at(2))
        .await;
    assert_eq!(
        third,
        Err(StoreError::LimitExceeded {
            what: "steps per job",
            limit: 2
        })
    );
    store
        .signal(&scope, job.id, signal("a"), "1".into(), None, tight, at(3))
        .await
        .unwrap();
    let second = store
        .signal(&scope, job.id, signal("b"), "1".into(), None, tight, at(3))
        .await;
    assert_eq!(
        second,
        Err(StoreError::LimitExceeded {
            what: "pending signals per job",
            limit: 1
        })
    );
    store
        .spawn_child(
            &scope,
            job.id,
            &token(&leased),
            step("c1"),
            new_job(spec("k")),
            tight,
            at(4),
        )
        .await
        .unwrap();
    let another = store
        .spawn_child(
            &scope,
            job.id,
            &token(&leased),
            step("c2"),
            new_job(spec("k")),
            tight,
            at(4),
        )
        .await;
    assert_eq!(
        another,
        Err(StoreError::LimitExceeded {
            what: "children per job",
            limit: 1
        })
    );
}

pub async fn a_waiting_job_can_be_cancelled(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let job = enqueue_one(store, &scope, spec("w"), t0()).await;
    let leased = lease_one(store, &scope, &key, "w", at(1)).await.job;
    store
        .wait(
            &scope,
            job.id,
            &token(&leased),
            step("nap"),
            WaitFor::Until(at(10)),
            LIMITS,
            at(2),
        )
        .await
        .unwrap();
    let cancelled = store.cancel(&scope, job.id, None, at(3)).await.unwrap();
    assert_eq!((cancelled.state, cancelled.wait.is_none()), (JobState::Cancelled, true));
    assert_eq!(
        store.fire_timers(at(10), 10).await.unwrap().count,
        0,
        "a cancelled wait never fires"
    );
}
