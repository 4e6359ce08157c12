use std::time::Duration;

use steadfast_core::JobState;
use steadfast_core::lifecycle::{EnqueueRequest, Failure};

use super::*;
use crate::{AuditQuery, PruneCutoffs, QueueRetention, RetryPlan, StoreError, TenantLimits};

pub async fn tenant_limits_and_queue_retention_are_kept(store: &impl Store) {
    let (scope, _) = new_tenant(store).await;
    let (other, _) = new_tenant(store).await;
    let limits = TenantLimits {
        key_rate: Some((5, 10)),
        max_unfinished_jobs: Some(100),
    };
    store.set_tenant_limits(scope.tenant_id(), limits, at(1)).await.unwrap();
    let all = store.tenant_limits().await.unwrap();
    assert!(all.contains(&(scope.tenant_id(), limits)), "{all:?}");
    assert!(!all.iter().any(|(tenant, _)| *tenant == other.tenant_id()));
    let unknown = TenantId(uuid::Uuid::now_v7());
    assert_eq!(
        store.set_tenant_limits(unknown, limits, at(1)).await,
        Err(StoreError::NotFound)
    );

    let queue = QueueName::new("reports").unwrap();
    assert_eq!(
        store.queue_retention(&scope, &queue).await.unwrap(),
        QueueRetention::default()
    );
    let own = QueueRetention {
        succeeded: Some(Duration::from_secs(3600)),
        failed: None,
    };
    store.set_queue_retention(&scope, &queue, own, at(2)).await.unwrap();
    assert_eq!(store.queue_retention(&scope, &queue).await.unwrap(), own);
    assert_eq!(
        store.queue_retention(&other, &queue).await.unwrap(),
        QueueRetention::default()
    );
    let all = store.queue_retentions().await.unwrap();
    assert!(all.contains(&(scope.tenant_id(), queue.clone(), own)), "{all:?}");

    let actions: Vec<String> = store
        .audit_records(
            &scope,
            AuditQuery {
                limit: 100,
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap()
        .records
        .into_iter()
        .map(|record| record.action)
        .filter(|action| action.contains("limits") || action.contains("retention"))
        .collect();
    assert_eq!(actions, ["tenant.limits_set", "queue.retention_set"]);
}

pub async fn finished_jobs_are_pruned_after_their_retention_with_everything_they_hold(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let keyed = |key: &str| {
        EnqueueRequest {
            idempotency_key: Some(key.into()),
            ..request("done", "{}")
        }
        .validate(&Limits::default(), [1; 32], t0())
        .unwrap()
    };
    // Three jobs finish at 10 s: one succeeds (with an idempotency key), one
    // dies, one is cancelled; one more is still queued.
    let succeeded = enqueue_one(store, &scope, keyed("k-succeeded"), t0()).await;
    let dead = enqueue_one(store, &scope, spec("done"), t0()).await;
    let cancelled = enqueue_one(store, &scope, spec("done"), t0()).await;
    let leased = lease_jobs(store, &scope, lease_request(&["done"], 2, &key), at(1)).await;
    let token_of = |id: JobId| token(leased.iter().find(|job| job.id == id).unwrap());
    store
        .complete(&scope, succeeded.id, &token_of(succeeded.id), "1".into(), at(10))
        .await
        .unwrap();
    let failure = Failure {
        error: steadfast_core::AttemptError {
            message: "no".into(),
            kind: None,
        },
        retryable: false,
        retry_after: None,
    };
    let plan = RetryPlan {
        policy: steadfast_core::RetryPolicy::default(),
        jitter_seed: 1,
    };
    store
        .fail(&scope, dead.id, &token_of(dead.id), failure, plan, at(10))
        .await
        .unwrap();
    store.cancel(&scope, cancelled.id, None, at(10)).await.unwrap();
    let waiting = enqueue_one(store, &scope, spec("done"), at(11)).await;

    let pairs = store.job_queues().await.unwrap();
    assert!(
        pairs.contains(&(scope.tenant_id(), QueueName::new("done").unwrap())),
        "{pairs:?}"
    );
    assert_eq!(
        store
            .unfinished_counts()
            .await
            .unwrap()
            .into_iter()
            .find(|(t, _)| *t == scope.tenant_id()),
        Some((scope.tenant_id(), 1))
    );

    let queue = QueueName::new("done").unwrap();
    let cutoffs = |succeeded: u64, failed: u64| PruneCutoffs {
        succeeded_before: at(succeeded),
        failed_before: at(failed),
    };
    // Past its cutoff, the succeeded job is still kept while its
    // idempotency key is live (a retry must find it); failed ones are kept
    // longer by their own cutoff.
    let tenant = scope.tenant_id();
    assert_eq!(
        store.prune_jobs(tenant, &queue, cutoffs(11, 10), 100, at(20)).await,
        Ok(0)
    );
    assert!(store.job(&scope, succeeded.id).await.unwrap().is_some());
    let past_dedup = Limits::default().dedup_window.as_secs() + 60;
    let pruned = store
        .prune_jobs(tenant, &queue, cutoffs(11, 10), 100, at(past_dedup))
        .await;
    assert_eq!(pruned, Ok(1));
    assert!(store.job(&scope, succeeded.id).await.unwrap().is_none());
    assert!(store.job(&scope, dead.id).await.unwrap().is_some());
    // Its idempotency key went with it: the same key makes a new job.
    let again = enqueue_one(store, &scope, keyed("k-succeeded"), at(past_dedup + 1)).await;
    assert_ne!(again.id, succeeded.id);

    // Bounded batches: one at a time.
    let now = at(past_dedup + 2);
    for expected in [1, 1, 0] {
        assert_eq!(
            store.prune_jobs(tenant, &queue, cutoffs(11, 11), 1, now).await,
            Ok(expected)
        );
    }
    for id in [dead.id, cancelled.id] {
        assert!(store.job(&scope, id).await.unwrap().is_none());
    }
    let kept = store.job(&scope, waiting.id).await.unwrap().unwrap();
    assert_eq!(kept.job.state, JobState::Queued, "unfinished jobs are never pruned");

    let pruned = store
        .audit_records(
            &scope,
            AuditQuery {
                action: Some("jobs.pruned".into()),
                limit: 10,
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap()
        .records;
    assert_eq!(pruned.len(), 3, "one record per batch that removed jobs");
    assert!(crate::audit::verify(store, &scope, &[]).await.is_ok());
}

pub async fn a_finished_child_is_kept_while_its_parent_is_kept(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let parent = enqueue_one(store, &scope, spec("parents"), t0()).await;
    let leased = lease_jobs(store, &scope, lease_request(&["parents"], 1, &key), at(1)).await;
    let child = store
        .spawn_child(
            &scope,
            parent.id,
            &token(&leased[0]),
            steadfast_core::StepName::new("fan-out").unwrap(),
            new_job(spec("kids")),
            crate::WorkflowLimits::default(),
            at(2),
        )
        .await
        .unwrap()
        .job;
    store.cancel(&scope, child.id, None, at(3)).await.unwrap();
    let kids = QueueName::new("kids").unwrap();
    let long_after = PruneCutoffs {
        succeeded_before: at(1000),
        failed_before: at(1000),
    };
    let tenant = scope.tenant_id();
    assert_eq!(store.prune_jobs(tenant, &kids, long_after, 100, at(1000)).await, Ok(0));
    assert!(
        store.job(&scope, child.id).await.unwrap().is_some(),
        "replaying the step must find it"
    );
    store
        .complete(&scope, parent.id, &token(&leased[0]), "1".into(), at(4))
        .await
        .unwrap();
    assert_eq!(
        store.prune_jobs(tenant, &kids, long_after, 100, at(1000)).await,
        Ok(0),
        "a finished parent may be retried and run the step again"
    );
    let parents = QueueName::new("parents").unwrap();
    assert_eq!(
        store.prune_jobs(tenant, &parents, long_after, 100, at(1000)).await,
        Ok(1)
    );
    assert_eq!(store.prune_jobs(tenant, &kids, long_after, 100, at(1000)).await, Ok(1));
}
