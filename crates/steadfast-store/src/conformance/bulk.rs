//! Bulk operations: counted, started, walked in batches, stopped, bounded.

use steadfast_core::JobState;

use super::dashboard::kill;
use super::*;
use crate::bulk::{BulkAction, BulkFilter, BulkSpec, BulkStatus, MAX_RUNNING_PER_TENANT, NewBulk};
use crate::{AuditQuery, StoreError};

fn new_bulk(action: BulkAction, filter: BulkFilter, key: &KeyId) -> NewBulk {
    NewBulk {
        id: uuid::Uuid::now_v7(),
        spec: BulkSpec {
            action,
            filter,
            reason: "the bank was down".into(),
            key_id: key.to_string(),
            key_name: "ops".into(),
        },
    }
}

pub async fn a_bulk_retry_walks_every_matching_job_in_batches(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let (other, _) = new_tenant(store).await;
    let mut timeouts = Vec::new();
    for kind in ["timeout", "timeout", "declined", "timeout", "timeout", "timeout"] {
        enqueue_one(store, &scope, spec("bulk-a"), t0()).await;
        let job = kill(store, &scope, &key, "bulk-a", kind, at(1)).await;
        if kind == "timeout" {
            timeouts.push(job.id);
        }
    }
    enqueue_one(store, &scope, spec("bulk-b"), t0()).await;
    kill(store, &scope, &key, "bulk-b", "timeout", at(1)).await;

    let in_a = BulkFilter {
        queue: Some("bulk-a".into()),
        ..BulkFilter::default()
    };
    assert_eq!(
        store.count_bulk(&scope, BulkAction::Retry, &in_a, None).await.unwrap(),
        6
    );
    assert_eq!(
        store.count_bulk(&scope, BulkAction::Cancel, &in_a, None).await.unwrap(),
        0
    );
    let timed_out = BulkFilter {
        error_kind: Some("timeout".into()),
        ..in_a.clone()
    };
    assert_eq!(
        store
            .count_bulk(&scope, BulkAction::Retry, &timed_out, None)
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        store.count_bulk(&other, BulkAction::Retry, &in_a, None).await.unwrap(),
        0,
        "per tenant"
    );

    let started = store
        .start_bulk(&scope, new_bulk(BulkAction::Retry, timed_out, &key), at(3))
        .await
        .unwrap();
    assert_eq!(
        (started.status, started.matched, started.done),
        (BulkStatus::Running, 5, 0)
    );
    assert_eq!(
        store
            .running_bulk(100)
            .await
            .unwrap()
            .iter()
            .filter(|(_, id)| *id == started.id)
            .count(),
        1
    );
    // A job that dies after the start is not part of it.
    enqueue_one(store, &scope, spec("bulk-a"), at(4)).await;
    let late = kill(store, &scope, &key, "bulk-a", "timeout", at(4)).await;
    let queued = enqueue_one(store, &scope, spec("bulk-a"), at(4)).await;
    assert_eq!(
        store.count_bulk(&scope, BulkAction::Cancel, &in_a, None).await.unwrap(),
        1
    );

    let mut steps = Vec::new();
    loop {
        let stepped = store.step_bulk(scope.tenant_id(), started.id, 2, at(5)).await.unwrap();
        steps.push((stepped.operation.done, stepped.operation.status));
        if stepped.operation.status != BulkStatus::Running {
            assert!(stepped.ready.is_empty() || stepped.ready.iter().all(|q| q.as_str() == "bulk-a"));
            break;
        }
        assert_eq!(stepped.ready.iter().map(|q| q.as_str()).collect::<Vec<_>>(), ["bulk-a"]);
    }
    assert_eq!(
        steps,
        [
            (2, BulkStatus::Running),
            (4, BulkStatus::Running),
            (5, BulkStatus::Completed)
        ]
    );
    for id in &timeouts {
        assert_eq!(
            store.job(&scope, *id).await.unwrap().unwrap().job.state,
            JobState::Queued
        );
        let records = store
            .audit_records(
                &scope,
                AuditQuery {
                    job_id: Some(*id),
                    action: Some("job.retried".into()),
                    limit: 10,
                    ..AuditQuery::default()
                },
            )
            .await
            .unwrap()
            .records;
        let summary: serde_json::Value = serde_json::from_str(&records[0].summary).unwrap();
        assert_eq!(summary["bulk_operation"], started.id.to_string());
        assert_eq!(summary["reason"], "the bank was down");
        assert_eq!(
            records[0].actor.key_id(),
            Some(&key),
            "recorded as the key that started it"
        );
    }
    assert_eq!(
        store.job(&scope, late.id).await.unwrap().unwrap().job.state,
        JobState::Dead
    );
    assert_eq!(
        store.job(&scope, queued.id).await.unwrap().unwrap().job.state,
        JobState::Queued
    );
    let finished = store.bulk(&scope, started.id).await.unwrap().unwrap();
    assert_eq!(
        (finished.done, finished.failed, finished.finished_at),
        (5, 0, Some(at(5)))
    );
    // Stepping a finished operation changes nothing.
    let again = store.step_bulk(scope.tenant_id(), started.id, 2, at(6)).await.unwrap();
    assert_eq!(again.operation, finished);
    assert_eq!(
        store.bulk(&other, started.id).await.unwrap(),
        None,
        "another tenant sees nothing"
    );
    let listed = store.list_bulk(&scope, 10).await.unwrap();
    assert_eq!(listed.iter().map(|o| o.id).collect::<Vec<_>>(), [started.id]);
}

pub async fn a_bulk_operation_can_be_stopped_and_a_tenant_runs_a_bounded_number(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    for _ in 0..3 {
        enqueue_one(store, &scope, spec("bulk-c"), t0()).await;
    }
    let all = BulkFilter {
        queue: Some("bulk-c".into()),
        state: Some("queued".into()),
        ..BulkFilter::default()
    };
    let started = store
        .start_bulk(&scope, new_bulk(BulkAction::Cancel, all, &key), at(1))
        .await
        .unwrap();
    let first = store.step_bulk(scope.tenant_id(), started.id, 1, at(2)).await.unwrap();
    assert_eq!((first.operation.done, first.operation.status), (1, BulkStatus::Running));
    let stopped = store.cancel_bulk(&scope, started.id, at(3)).await.unwrap();
    assert_eq!(
        (stopped.status, stopped.finished_at),
        (BulkStatus::Cancelled, Some(at(3)))
    );
    let after = store.step_bulk(scope.tenant_id(), started.id, 1, at(4)).await.unwrap();
    assert_eq!(after.operation.done, 1, "a stopped operation does no more");
    assert_eq!(
        store
            .count_bulk(&scope, BulkAction::Cancel, &BulkFilter::default(), None)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store.cancel_bulk(&scope, uuid::Uuid::now_v7(), at(5)).await.err(),
        Some(StoreError::NotFound)
    );

    let nothing = BulkFilter {
        queue: Some("empty".into()),
        ..BulkFilter::default()
    };
    for _ in 0..MAX_RUNNING_PER_TENANT {
        store
            .start_bulk(&scope, new_bulk(BulkAction::Retry, nothing.clone(), &key), at(6))
            .await
            .unwrap();
    }
    assert!(matches!(
        store
            .start_bulk(&scope, new_bulk(BulkAction::Retry, nothing, &key), at(6))
            .await,
        Err(StoreError::LimitExceeded { .. })
    ));
}

/// The walk goes in `seq` order, each job once: a job that moves between
/// matching states while the operation runs is still reached, and two dead
/// jobs of one singleton key in one batch do not both come back.
pub async fn a_bulk_walk_reaches_jobs_that_change_state_and_keeps_singletons_single(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    // The oldest job is scheduled for later; three queued ones follow.
    let later = steadfast_core::lifecycle::EnqueueRequest {
        run_at: Some(at(100)),
        ..request("bulk-w", "{}")
    }
    .validate(&steadfast_core::Limits::default(), [0; 32], t0())
    .unwrap();
    let scheduled = enqueue_one(store, &scope, later, t0()).await;
    assert_eq!(scheduled.state, JobState::Scheduled);
    let mut jobs = vec![scheduled.id];
    for _ in 0..3 {
        jobs.push(enqueue_one(store, &scope, spec("bulk-w"), t0()).await.id);
    }
    let all = BulkFilter {
        queue: Some("bulk-w".into()),
        ..BulkFilter::default()
    };
    let started = store
        .start_bulk(&scope, new_bulk(BulkAction::Cancel, all, &key), at(4))
        .await
        .unwrap();
    assert_eq!(started.matched, 4);
    let first = store.step_bulk(scope.tenant_id(), started.id, 2, at(5)).await.unwrap();
    assert_eq!(first.operation.done, 2);
    // Time passes: anything still scheduled becomes queued. A walk in
    // (state, seq) order would have passed queued jobs of a lower seq.
    store.fire_timers(at(200), 100).await.unwrap();
    let mut last = first.operation;
    while last.status == BulkStatus::Running {
        last = store
            .step_bulk(scope.tenant_id(), started.id, 2, at(201))
            .await
            .unwrap()
            .operation;
    }
    assert_eq!((last.done, last.failed), (4, 0));
    for id in &jobs {
        assert_eq!(
            store.job(&scope, *id).await.unwrap().unwrap().job.state,
            JobState::Cancelled
        );
    }

    // Two dead jobs of one singleton key: the first comes back, the second
    // fails (its key has an unfinished job again).
    let singleton = |queue: &str| {
        steadfast_core::lifecycle::EnqueueRequest {
            singleton: Some(("nightly".into(), None)),
            ..request(queue, "{}")
        }
        .validate(&steadfast_core::Limits::default(), [0; 32], t0())
        .unwrap()
    };
    let mut dead = Vec::new();
    for n in 0..2 {
        let job = enqueue_one(store, &scope, singleton("bulk-s"), at(10 + n)).await;
        kill(store, &scope, &key, "bulk-s", "boom", at(10 + n)).await;
        dead.push(job.id);
    }
    let retry = BulkFilter {
        queue: Some("bulk-s".into()),
        ..BulkFilter::default()
    };
    let started = store
        .start_bulk(&scope, new_bulk(BulkAction::Retry, retry, &key), at(20))
        .await
        .unwrap();
    let stepped = store
        .step_bulk(scope.tenant_id(), started.id, 10, at(21))
        .await
        .unwrap();
    assert_eq!(
        (
            stepped.operation.done,
            stepped.operation.failed,
            stepped.operation.status
        ),
        (1, 1, BulkStatus::Completed)
    );
    assert_eq!(stepped.operation.failures[0].job_id, dead[1].to_string());
    assert_eq!(
        store.job(&scope, dead[0]).await.unwrap().unwrap().job.state,
        JobState::Queued
    );
    assert_eq!(
        store.job(&scope, dead[1]).await.unwrap().unwrap().job.state,
        JobState::Dead
    );
}
