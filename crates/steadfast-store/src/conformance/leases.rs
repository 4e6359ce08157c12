use std::collections::HashSet;

use steadfast_core::lifecycle::Failure;
use steadfast_core::{AttemptError, AttemptOutcome, JobState, RetryPolicy};

use super::*;
use crate::{RetryPlan, StoreError};

pub async fn lease_order_is_priority_then_run_at_then_fifo(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let with = |priority: i64, run_at: Timestamp| {
        EnqueueRequest {
            priority: Some(priority),
            run_at: Some(run_at),
            ..request("work", "{}")
        }
        .validate(&Limits::default(), [0; 32], t0())
        .unwrap()
    };
    let low = enqueue_one(store, &scope, with(0, t0()), at(1)).await;
    let late_high = enqueue_one(store, &scope, with(5, at(1)), at(1)).await;
    let early_high = enqueue_one(store, &scope, with(5, t0()), at(1)).await;
    let low_second = enqueue_one(store, &scope, with(0, t0()), at(1)).await;
    let other_queue = enqueue_one(store, &scope, spec("other"), at(1)).await;

    let leased = lease_jobs(store, &scope, lease_request(&["work"], 10, &key), at(2)).await;
    let order: Vec<_> = leased.iter().map(|j| j.id).collect();
    assert_eq!(order, vec![early_high.id, late_high.id, low.id, low_second.id]);
    assert!(leased.iter().all(|j| j.state == JobState::Running && j.attempt == 1));
    let tokens: HashSet<_> = leased.iter().map(token).collect();
    assert_eq!(tokens.len(), 4, "every lease has its own token");
    let more = lease_jobs(store, &scope, lease_request(&["work", "other"], 10, &key), at(2)).await;
    assert_eq!(more.iter().map(|j| j.id).collect::<Vec<_>>(), vec![other_queue.id]);
}

pub async fn a_batch_is_leased_in_the_order_it_was_enqueued(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    // Ids in the opposite order to the batch's, and a keyed job in the middle
    // (which a store may write apart): only the batch order may decide.
    let mut ids: Vec<JobId> = (0..40).map(|_| JobId(uuid::Uuid::now_v7())).collect();
    ids.reverse();
    let jobs: Vec<NewJob> = ids
        .iter()
        .enumerate()
        .map(|(index, &id)| {
            let request = EnqueueRequest {
                idempotency_key: (index == 20).then(|| "the-middle-one".into()),
                ..request("fifo", "{}")
            };
            NewJob {
                id,
                spec: request.validate(&Limits::default(), [7; 32], t0()).unwrap(),
            }
        })
        .collect();
    store
        .enqueue(&scope, jobs, Limits::default().dedup_window, at(1))
        .await
        .unwrap();
    let mut leased = Vec::new();
    for _ in 0..ids.len() {
        let one = lease_jobs(store, &scope, lease_request(&["fifo"], 1, &key), at(2)).await;
        leased.push(one[0].id);
    }
    assert_eq!(leased, ids, "first in, first out");
}

pub async fn concurrent_leases_never_share_a_job(store: &(impl Store + Clone)) {
    let (scope, key) = new_tenant(store).await;
    let jobs: Vec<_> = (0..300).map(|_| new_job(spec("race"))).collect();
    store
        .enqueue(&scope, jobs, Duration::from_secs(60), t0())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (store, scope, key) = (store.clone(), scope.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = lease_jobs(&store, &scope, lease_request(&["race"], 7, &key), at(1)).await;
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|j| j.id));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 300, "every job was leased");
    assert_eq!(unique.len(), 300, "no job was leased twice");
}

pub async fn complete_needs_the_current_lease(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let job = enqueue_one(store, &scope, spec("q"), t0()).await;
    let leased = lease_jobs(store, &scope, lease_request(&["q"], 1, &key), at(1))
        .await
        .remove(0);
    let stale = format!("{}x", token(&leased));
    assert_eq!(
        store.complete(&scope, job.id, &stale, "1".into(), at(2)).await,
        Err(StoreError::LeaseLost)
    );
    assert_eq!(
        store.job(&scope, job.id).await.unwrap().unwrap().job,
        leased,
        "a refused call changes nothing"
    );

    let done = store
        .complete(&scope, job.id, &token(&leased), r#"{"ok":true}"#.into(), at(3))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.output.as_deref(), Some(r#"{"ok":true}"#));
    assert_eq!(
        store.complete(&scope, job.id, &token(&leased), "2".into(), at(4)).await,
        Err(StoreError::LeaseLost),
        "completing twice is refused"
    );
    let record = store.job(&scope, job.id).await.unwrap().unwrap();
    assert_eq!(record.job, done.job);
    assert_eq!(record.attempts.len(), 1);
    let attempt = &record.attempts[0];
    assert_eq!(
        (attempt.number, attempt.outcome, attempt.started_at, attempt.ended_at),
        (1, AttemptOutcome::Succeeded, at(1), at(3))
    );
    assert!(record.was_leased_by(&key));
    let unknown = JobId(uuid::Uuid::now_v7());
    assert_eq!(
        store.complete(&scope, unknown, "lt_x", "1".into(), at(4)).await,
        Err(StoreError::NotFound)
    );
}

pub async fn failures_retry_with_backoff_then_die(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let two = EnqueueRequest {
        max_attempts: Some(2),
        ..request("flaky", "{}")
    }
    .validate(&Limits::default(), [0; 32], t0())
    .unwrap();
    let job = enqueue_one(store, &scope, two, t0()).await;
    let policy = RetryPolicy {
        base: Duration::from_secs(10),
        cap: Duration::from_secs(10),
    };
    let failure = |message: &str| Failure {
        error: AttemptError {
            message: message.into(),
            kind: Some("http_503".into()),
        },
        retryable: true,
        retry_after: None,
    };

    let first = lease_jobs(store, &scope, lease_request(&["flaky"], 1, &key), at(1))
        .await
        .remove(0);
    let after_first = store
        .fail(
            &scope,
            job.id,
            &token(&first),
            failure("one"),
            RetryPlan { policy, jitter_seed: 7 },
            at(2),
        )
        .await
        .unwrap();
    assert!(matches!(after_first.state, JobState::Scheduled | JobState::Queued));
    assert!(
        after_first.run_at >= at(2) && after_first.run_at <= at(12),
        "full jitter within the bound"
    );

    store.fire_timers(at(12), 100).await.unwrap();
    let second = lease_jobs(store, &scope, lease_request(&["flaky"], 1, &key), at(12))
        .await
        .remove(0);
    assert_eq!(second.attempt, 2);
    let dead = store
        .fail(
            &scope,
            job.id,
            &token(&second),
            failure("two"),
            RetryPlan { policy, jitter_seed: 7 },
            at(13),
        )
        .await
        .unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.finished_at, Some(at(13)));

    let record = store.job(&scope, job.id).await.unwrap().unwrap();
    let history: Vec<_> = record
        .attempts
        .iter()
        .map(|a| (a.number, a.outcome, a.error.as_ref().map(|e| e.message.clone())))
        .collect();
    assert_eq!(
        history,
        vec![
            (1, AttemptOutcome::Failed, Some("one".into())),
            (2, AttemptOutcome::Failed, Some("two".into()))
        ]
    );
    assert_eq!(
        record.attempts[1].error.as_ref().unwrap().kind.as_deref(),
        Some("http_503")
    );
}

pub async fn expired_leases_are_failed_attempts(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let job = enqueue_one(store, &scope, spec("slow"), t0()).await;
    let leased = lease_jobs(store, &scope, lease_request(&["slow"], 1, &key), at(1))
        .await
        .remove(0);
    let expiry = leased.lease.as_ref().unwrap().expires_at;
    let policy = RetryPolicy {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(1),
    };

    let early = store.expire_leases(at(2), policy, 1, 100).await.unwrap();
    assert_eq!(early.count, 0, "a live lease is not expired");
    assert!(store.next_due().await.unwrap().is_some_and(|due| due <= expiry));

    assert_eq!(
        store
            .complete(&scope, job.id, &token(&leased), "1".into(), expiry)
            .await,
        Err(StoreError::LeaseLost),
        "a lease is dead the moment it lapses, swept or not"
    );
    let swept = store.expire_leases(expiry, policy, 1, 100).await.unwrap();
    assert_eq!(swept.count, 1);
    let record = store.job(&scope, job.id).await.unwrap().unwrap();
    assert!(matches!(record.job.state, JobState::Queued | JobState::Scheduled));
    assert_eq!(record.attempts[0].outcome, AttemptOutcome::LeaseExpired);

    let later = expiry.saturating_add(Duration::from_secs(2)).unwrap();
    store.fire_timers(later, 100).await.unwrap();
    let again = lease_jobs(store, &scope, lease_request(&["slow"], 1, &key), later)
        .await
        .remove(0);
    assert_eq!(again.attempt, 2);
    assert_eq!(
        store
            .complete(&scope, job.id, &token(&leased), "zombie".into(), later)
            .await,
        Err(StoreError::LeaseLost),
        "the first holder can never overwrite the second attempt"
    );
    let done = store
        .complete(&scope, job.id, &token(&again), "1".into(), later)
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
}

pub async fn heartbeat_extends_the_lease(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let job = enqueue_one(store, &scope, spec("hb"), t0()).await;
    let leased = lease_jobs(store, &scope, lease_request(&["hb"], 1, &key), at(1))
        .await
        .remove(0);
    let first_expiry = leased.lease.as_ref().unwrap().expires_at;
    let beat = store
        .heartbeat(&scope, job.id, &token(&leased), Duration::from_secs(30), at(20))
        .await
        .unwrap();
    let new_expiry = beat.lease.as_ref().unwrap().expires_at;
    assert!(new_expiry > first_expiry);
    let policy = RetryPolicy::default();
    assert_eq!(
        store.expire_leases(first_expiry, policy, 1, 100).await.unwrap().count,
        0
    );
    assert_eq!(
        store
            .heartbeat(&scope, job.id, "lt_wrong", Duration::from_secs(30), at(21))
            .await,
        Err(StoreError::LeaseLost)
    );
}

pub async fn cancel_and_retry_are_operator_actions(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let job = enqueue_one(store, &scope, spec("ops"), t0()).await;
    let leased = lease_jobs(store, &scope, lease_request(&["ops"], 1, &key), at(1))
        .await
        .remove(0);
    let cancelled = store.cancel(&scope, job.id, None, at(2)).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(
        store.complete(&scope, job.id, &token(&leased), "1".into(), at(3)).await,
        Err(StoreError::LeaseLost),
        "cancelling fences the running worker"
    );
    assert!(matches!(
        store.cancel(&scope, job.id, None, at(3)).await,
        Err(StoreError::InvalidState { .. })
    ));

    let retried = store.retry(&scope, job.id, None, at(4)).await.unwrap();
    assert_eq!(
        (retried.state, retried.attempt, retried.finished_at),
        (JobState::Queued, 1, None)
    );
    let second = lease_jobs(store, &scope, lease_request(&["ops"], 1, &key), at(5))
        .await
        .remove(0);
    assert_eq!(second.attempt, 2);
    store
        .complete(&scope, job.id, &token(&second), "1".into(), at(6))
        .await
        .unwrap();
    assert!(matches!(
        store.retry(&scope, job.id, None, at(7)).await,
        Err(StoreError::InvalidState { .. })
    ));
    let record = store.job(&scope, job.id).await.unwrap().unwrap();
    let outcomes: Vec<_> = record.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, vec![AttemptOutcome::Cancelled, AttemptOutcome::Succeeded]);
}
