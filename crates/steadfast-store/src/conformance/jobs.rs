use steadfast_core::JobState;

use super::*;
use crate::{JobQuery, StoreError};

pub async fn enqueue_then_read_back(store: &impl Store) {
    let (scope, _) = new_tenant(store).await;
    let spec = request("emails", r#"{"to":"a@example.com"}"#)
        .validate(&Limits::default(), [0; 32], t0())
        .unwrap();
    let job = enqueue_one(store, &scope, spec, t0()).await;
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.tenant_id, scope.tenant_id());
    let record = store.job(&scope, job.id).await.unwrap().expect("stored");
    assert_eq!(record.job, job);
    assert!(record.attempts.is_empty());
    assert_eq!(record.job.payload, r#"{"to":"a@example.com"}"#);
    assert_eq!(store.job(&scope, JobId(uuid::Uuid::now_v7())).await.unwrap(), None);
}

pub async fn scheduled_jobs_wait_for_run_at(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let later = EnqueueRequest {
        run_at: Some(at(60)),
        ..request("reports", "{}")
    }
    .validate(&Limits::default(), [0; 32], t0())
    .unwrap();
    let job = enqueue_one(store, &scope, later, t0()).await;
    assert_eq!(job.state, JobState::Scheduled);
    assert!(
        lease_jobs(store, &scope, lease_request(&["reports"], 1, &key), at(59))
            .await
            .is_empty()
    );
    assert!(store.next_due().await.unwrap().is_some_and(|due| due <= at(60)));

    let early = store.fire_timers(at(59), 100).await.unwrap();
    assert!(!early.ready_queues.contains(&(scope.tenant_id(), job.queue.clone())));
    let swept = store.fire_timers(at(60), 100).await.unwrap();
    assert!(swept.ready_queues.contains(&(scope.tenant_id(), job.queue.clone())));
    let leased = lease_jobs(store, &scope, lease_request(&["reports"], 1, &key), at(60)).await;
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].id, job.id);
}

fn keyed(key: &str, payload: &str, fingerprint: u8) -> JobSpec {
    EnqueueRequest {
        idempotency_key: Some(key.into()),
        ..request("payments", payload)
    }
    .validate(&Limits::default(), [fingerprint; 32], t0())
    .unwrap()
}

pub async fn idempotent_enqueue_replays_and_refuses_reuse(store: &impl Store) {
    let (scope, _) = new_tenant(store).await;
    let window = Duration::from_secs(3600);
    let first = store
        .enqueue(&scope, vec![new_job(keyed("charge-1", "{}", 1))], window, t0())
        .await
        .unwrap();
    assert!(!first[0].replayed);
    let again = store
        .enqueue(&scope, vec![new_job(keyed("charge-1", "{}", 1))], window, at(10))
        .await
        .unwrap();
    assert!(again[0].replayed);
    assert_eq!(again[0].job.id, first[0].job.id, "a replay returns the original job");
    let reused = store
        .enqueue(&scope, vec![new_job(keyed("charge-1", "{\"x\":1}", 2))], window, at(10))
        .await;
    assert_eq!(reused, Err(StoreError::IdempotencyKeyReused { index: 0 }));
    let all = store
        .list_jobs(
            &scope,
            JobQuery {
                queue: None,
                state: None,
                limit: 10,
                after: None,
                ..JobQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        all.jobs.len(),
        1,
        "neither the replay nor the refused request created a job"
    );
}

pub async fn idempotency_keys_expire_after_the_window(store: &impl Store) {
    let (scope, _) = new_tenant(store).await;
    let window = Duration::from_secs(100);
    let first = store
        .enqueue(&scope, vec![new_job(keyed("k", "{}", 1))], window, t0())
        .await
        .unwrap();
    let inside = store
        .enqueue(&scope, vec![new_job(keyed("k", "{}", 1))], window, at(99))
        .await
        .unwrap();
    assert_eq!(inside[0].job.id, first[0].job.id);
    let after = store
        .enqueue(&scope, vec![new_job(keyed("k", "{}", 3))], window, at(100))
        .await
        .unwrap();
    assert!(!after[0].replayed);
    assert_ne!(
        after[0].job.id, first[0].job.id,
        "after the window the key starts afresh"
    );
    assert!(store.prune_idempotency_keys(at(250), 1000).await.unwrap() >= 1);
    let fresh = store
        .enqueue(&scope, vec![new_job(keyed("k", "{}", 4))], window, at(251))
        .await
        .unwrap();
    assert!(!fresh[0].replayed);
}

pub async fn batch_enqueue_is_all_or_nothing(store: &impl Store) {
    let (scope, _) = new_tenant(store).await;
    let window = Duration::from_secs(3600);
    store
        .enqueue(&scope, vec![new_job(keyed("taken", "{}", 1))], window, t0())
        .await
        .unwrap();
    let batch = vec![new_job(spec("a")), new_job(spec("b")), new_job(keyed("taken", "{}", 2))];
    assert_eq!(
        store.enqueue(&scope, batch, window, at(1)).await,
        Err(StoreError::IdempotencyKeyReused { index: 2 })
    );
    let all = store
        .list_jobs(
            &scope,
            JobQuery {
                queue: None,
                state: None,
                limit: 10,
                after: None,
                ..JobQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.jobs.len(), 1, "no job of the refused batch exists");

    let batch = vec![
        new_job(spec("a")),
        new_job(keyed("dup", "{}", 5)),
        new_job(keyed("dup", "{}", 5)),
    ];
    let created = store.enqueue(&scope, batch, window, at(2)).await.unwrap();
    assert_eq!(created.len(), 3);
    assert_eq!(
        created[1].job.id, created[2].job.id,
        "a key repeated inside a batch is a replay"
    );
    assert!(created[2].replayed);
}

pub async fn listing_pages_newest_first_with_filters(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let queue = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(enqueue_one(store, &scope, spec(queue), at(i)).await.id);
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_jobs(
                &scope,
                JobQuery {
                    queue: None,
                    state: None,
                    limit: 3,
                    after,
                    ..JobQuery::default()
                },
            )
            .await
            .unwrap();
        assert!(page.jobs.len() <= 3);
        seen.extend(page.jobs.iter().map(|j| j.id));
        match page.next_cursor {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "pages cover every job once, newest first");

    let even = QueueName::new("even").unwrap();
    let page = store
        .list_jobs(
            &scope,
            JobQuery {
                queue: Some(even.clone()),
                state: None,
                limit: 100,
                after: None,
                ..JobQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 4);
    assert!(page.jobs.iter().all(|j| j.queue == even));
    assert_eq!(page.next_cursor, None);

    lease_jobs(store, &scope, lease_request(&["odd"], 1, &key), at(10)).await;
    let running = store
        .list_jobs(
            &scope,
            JobQuery {
                queue: None,
                state: Some(JobState::Running),
                limit: 100,
                after: None,
                ..JobQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(running.jobs.len(), 1);
    assert_eq!(running.jobs[0].queue.as_str(), "odd");
}
