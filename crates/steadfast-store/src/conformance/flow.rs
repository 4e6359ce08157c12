use std::collections::HashMap;

use steadfast_core::lifecycle::Failure;
use steadfast_core::{AttemptError, JobState, ResourceName, RetryPolicy, StepName, WaitFor};

use super::*;
use crate::flow::{Breaker, BreakerState, Fairness, Rate, ResourceConfig, RetryBudget};
use crate::{AuditQuery, Enqueued, PolicyPatch, QueuePolicy, RetryPlan, SingletonOutcome, StoreError, WorkflowLimits};

fn keyed(queue: &str, key: Option<&str>) -> JobSpec {
    EnqueueRequest {
        flow_key: key.map(str::to_owned),
        ..request(queue, "{}")
    }
    .validate(&Limits::default(), [0; 32], t0())
    .expect("valid")
}

async fn enqueue_many(store: &impl Store, scope: &TenantScope, specs: Vec<JobSpec>, now: Timestamp) -> Vec<Job> {
    let jobs = specs.into_iter().map(new_job).collect();
    let created = store
        .enqueue(scope, jobs, Limits::default().dedup_window, now)
        .await
        .expect("enqueue");
    created.into_iter().map(|enqueued| enqueued.job).collect()
}

async fn set(store: &impl Store, scope: &TenantScope, queue: &str, patch: PolicyPatch) -> QueuePolicy {
    let queue = QueueName::new(queue).expect("valid");
    store
        .set_queue_policy(scope, &queue, patch, t0())
        .await
        .expect("set policy")
}

fn keys_of(jobs: &[Job]) -> Vec<&str> {
    jobs.iter()
        .map(|job| job.flow_key.as_ref().map_or("", |key| key.as_str()))
        .collect()
}

pub async fn policies_merge_validate_and_are_audited(store: &impl Store) {
    let (scope, _) = new_tenant(store).await;
    let queue = QueueName::new("payments").unwrap();
    assert_eq!(
        store.queue_policy(&scope, &queue).await.unwrap(),
        QueuePolicy::default()
    );

    let first = set(
        store,
        &scope,
        "payments",
        PolicyPatch {
            concurrency: Some(Some(4)),
            key_concurrency: Some(Some(2)),
            ..PolicyPatch::default()
        },
    )
    .await;
    let second = set(
        store,
        &scope,
        "payments",
        PolicyPatch {
            paused: Some(true),
            concurrency: Some(None),
            ..PolicyPatch::default()
        },
    )
    .await;
    assert_eq!((first.concurrency, first.key_concurrency), (Some(4), Some(2)));
    assert_eq!(
        second,
        QueuePolicy {
            paused: true,
            key_concurrency: Some(2),
            ..QueuePolicy::default()
        },
        "left-out fields stay, null clears"
    );
    assert_eq!(store.queue_policy(&scope, &queue).await.unwrap(), second);

    let refused = store
        .set_queue_policy(
            &scope,
            &queue,
            PolicyPatch {
                weights: Some([("acme".to_owned(), 3)].into()),
                ..PolicyPatch::default()
            },
            t0(),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(ref m)) if m.starts_with("weights")),
        "{refused:?}"
    );
    assert_eq!(
        store.queue_policy(&scope, &queue).await.unwrap(),
        second,
        "a refused change changes nothing"
    );

    let records = store
        .audit_records(
            &scope,
            AuditQuery {
                limit: 100,
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap()
        .records;
    let changes: Vec<_> = records.iter().filter(|r| r.action == "queue.policy_set").collect();
    assert_eq!(changes.len(), 2, "one record per accepted change");
    assert!(changes.iter().all(|r| r.target == "payments"));

    let (other, _) = new_tenant(store).await;
    assert_eq!(
        store.queue_policy(&other, &queue).await.unwrap(),
        QueuePolicy::default(),
        "another tenant's queue of the same name has its own policy"
    );
}

pub async fn a_paused_queue_grants_no_lease_until_resumed(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    enqueue_many(store, &scope, (0..3).map(|_| spec("mail")).collect(), t0()).await;
    set(
        store,
        &scope,
        "mail",
        PolicyPatch {
            paused: Some(true),
            ..PolicyPatch::default()
        },
    )
    .await;
    let held = store
        .lease(&scope, lease_request(&["mail"], 10, &key), at(1))
        .await
        .unwrap();
    assert!(held.is_empty(), "no lease while paused");
    let other = enqueue_one(store, &scope, spec("other"), at(1)).await;
    let both = lease_jobs(store, &scope, lease_request(&["mail", "other"], 10, &key), at(2)).await;
    assert_eq!(
        both.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![other.id],
        "other queues go on"
    );

    set(
        store,
        &scope,
        "mail",
        PolicyPatch {
            paused: Some(false),
            ..PolicyPatch::default()
        },
    )
    .await;
    let resumed = lease_jobs(store, &scope, lease_request(&["mail"], 10, &key), at(3)).await;
    assert_eq!(resumed.len(), 3);
}

pub async fn concurrency_counts_running_jobs_and_frees_slots_as_they_end(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    enqueue_many(store, &scope, (0..6).map(|_| spec("render")).collect(), t0()).await;
    set(
        store,
        &scope,
        "render",
        PolicyPatch {
            concurrency: Some(Some(2)),
            ..PolicyPatch::default()
        },
    )
    .await;
    let first = lease_jobs(store, &scope, lease_request(&["render"], 10, &key), at(1)).await;
    assert_eq!(first.len(), 2, "at most 2 running");
    let none = store
        .lease(&scope, lease_request(&["render"], 10, &key), at(1))
        .await
        .unwrap();
    assert!(none.is_empty(), "both slots are taken");
    assert!(none.retry_at.is_some(), "a held lease says when to look again");

    // A completion frees its slot in its own transaction.
    store
        .complete(&scope, first[0].id, &token(&first[0]), "1".into(), at(2))
        .await
        .unwrap();
    let second = lease_jobs(store, &scope, lease_request(&["render"], 10, &key), at(2)).await;
    assert_eq!(second.len(), 1);

    // So does an expired lease: the sweep that requeues the job.
    let expiry = first[1].lease.as_ref().unwrap().expires_at;
    let policy = RetryPolicy {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(1),
    };
    assert_eq!(store.expire_leases(expiry, policy, 1, 100).await.unwrap().count, 1);
    let third = lease_jobs(store, &scope, lease_request(&["render"], 10, &key), expiry).await;
    assert_eq!(third.len(), 1, "the expired lease's slot went to a queued job");

    // And a workflow that parks itself holds no slot while it waits.
    let parked = &third[0];
    store
        .wait(
            &scope,
            parked.id,
            &token(parked),
            StepName::new("sleep:later").unwrap(),
            WaitFor::Until(at(10_000)),
            WorkflowLimits {
                max_steps: 10,
                max_pending_signals: 10,
                max_children: 10,
            },
            expiry,
        )
        .await
        .unwrap();
    let fourth = lease_jobs(store, &scope, lease_request(&["render"], 10, &key), expiry).await;
    assert_eq!(fourth.len(), 1, "the waiting job's slot is free");
}

pub async fn key_concurrency_limits_each_key_and_lets_other_keys_pass(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let mut specs: Vec<JobSpec> = (0..20).map(|_| keyed("sync", Some("acme"))).collect();
    specs.extend((0..3).map(|_| keyed("sync", Some("globex"))));
    specs.push(keyed("sync", None));
    enqueue_many(store, &scope, specs, t0()).await;
    set(
        store,
        &scope,
        "sync",
        PolicyPatch {
            key_concurrency: Some(Some(2)),
            ..PolicyPatch::default()
        },
    )
    .await;
    let leased = lease_jobs(store, &scope, lease_request(&["sync"], 50, &key), at(1)).await;
    let mut per_key: HashMap<&str, usize> = HashMap::new();
    for key in keys_of(&leased) {
        *per_key.entry(key).or_default() += 1;
    }
    assert_eq!(per_key.get("acme"), Some(&2), "acme's 20 jobs do not block the others");
    assert_eq!(per_key.get("globex"), Some(&2));
    assert_eq!(
        per_key.get(""),
        Some(&1),
        "jobs without a key are not held by key rules"
    );
    let again = store
        .lease(&scope, lease_request(&["sync"], 50, &key), at(1))
        .await
        .unwrap();
    assert!(
        again.is_empty(),
        "every key is at its limit: {:?}",
        keys_of(&again.iter().map(|l| l.job.clone()).collect::<Vec<_>>())
    );
}

pub async fn rates_admit_the_burst_then_the_steady_rate(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    enqueue_many(store, &scope, (0..30).map(|_| spec("calls")).collect(), t0()).await;
    set(
        store,
        &scope,
        "calls",
        PolicyPatch {
            rate: Some(Some(Rate {
                limit: 2,
                period_ms: 1000,
                burst: 3,
            })),
            ..PolicyPatch::default()
        },
    )
    .await;
    let burst = lease_jobs(store, &scope, lease_request(&["calls"], 30, &key), at(1)).await;
    assert_eq!(burst.len(), 3, "the burst at once");
    let held = store
        .lease(&scope, lease_request(&["calls"], 30, &key), at(1))
        .await
        .unwrap();
    assert!(held.is_empty());
    let retry_at = held.retry_at.expect("when the rate admits again");
    assert!(retry_at > at(1) && retry_at <= at(1).saturating_add(Duration::from_millis(500)).unwrap());
    let next = lease_jobs(store, &scope, lease_request(&["calls"], 30, &key), retry_at).await;
    assert_eq!(next.len(), 1, "then one per 500 ms");
    let later = lease_jobs(store, &scope, lease_request(&["calls"], 30, &key), at(6)).await;
    assert!(
        later.len() <= 3,
        "a quiet spell refills at most the burst, got {}",
        later.len()
    );
}

pub async fn key_rates_hold_each_key_to_its_own_rate(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let mut specs: Vec<JobSpec> = (0..10).map(|_| keyed("crawl", Some("a.example"))).collect();
    specs.extend((0..10).map(|_| keyed("crawl", Some("b.example"))));
    enqueue_many(store, &scope, specs, t0()).await;
    set(
        store,
        &scope,
        "crawl",
        PolicyPatch {
            key_rate: Some(Some(Rate {
                limit: 1,
                period_ms: 1000,
                burst: 2,
            })),
            ..PolicyPatch::default()
        },
    )
    .await;
    let first = lease_jobs(store, &scope, lease_request(&["crawl"], 20, &key), at(1)).await;
    let mut keys = keys_of(&first);
    keys.sort();
    assert_eq!(keys, vec!["a.example", "a.example", "b.example", "b.example"]);
    let held = lease_jobs(store, &scope, lease_request(&["crawl"], 20, &key), at(1)).await;
    assert!(held.is_empty());
    let second = lease_jobs(store, &scope, lease_request(&["crawl"], 20, &key), at(2)).await;
    assert_eq!(second.len(), 2, "one more per key a second later");
    assert_eq!(
        store.prune_flow_keys(at(2), 100).await.unwrap(),
        0,
        "both keys' limiters still hold"
    );
    assert_eq!(
        store.prune_flow_keys(at(60), 100).await.unwrap(),
        2,
        "past, they are forgotten"
    );
}

pub async fn fairness_serves_a_small_key_behind_a_flood(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    // Key A's 10,000 jobs first, in batches as a producer would send them.
    for _ in 0..10 {
        enqueue_many(
            store,
            &scope,
            (0..1000).map(|_| keyed("enrich", Some("flood"))).collect(),
            t0(),
        )
        .await;
    }
    enqueue_many(
        store,
        &scope,
        (0..10).map(|_| keyed("enrich", Some("small"))).collect(),
        at(1),
    )
    .await;
    set(
        store,
        &scope,
        "enrich",
        PolicyPatch {
            fairness: Some(Some(Fairness::FlowKey)),
            weights: Some([("flood".to_owned(), 2)].into()),
            ..PolicyPatch::default()
        },
    )
    .await;
    // One job per lease, as a slow worker would take them.
    let mut order = Vec::new();
    for _ in 0..30 {
        let leased = lease_jobs(store, &scope, lease_request(&["enrich"], 1, &key), at(2)).await;
        assert_eq!(leased.len(), 1);
        order.push(keys_of(&leased)[0].to_owned());
    }
    let small: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|(_, key)| *key == "small")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        small.len(),
        10,
        "all of small's jobs start within 30 leases, behind 10,000: {order:?}"
    );
    let flood_runs = order.split(|key| key == "small").map(<[String]>::len).max().unwrap();
    assert!(
        flood_runs <= 2,
        "flood gets its weight (2) per turn, no more: {order:?}"
    );
}

pub async fn retries_over_the_budget_are_deferred_not_failed(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let jobs = enqueue_many(store, &scope, (0..2).map(|_| spec("fragile")).collect(), t0()).await;
    set(
        store,
        &scope,
        "fragile",
        PolicyPatch {
            retry_budget: Some(Some(RetryBudget {
                ratio: 0.5,
                min_per_sec: 0.0,
            })),
            ..PolicyPatch::default()
        },
    )
    .await;
    // Two first attempts deposit one retry's worth (2 × 0.5).
    let first = lease_jobs(store, &scope, lease_request(&["fragile"], 2, &key), at(1)).await;
    assert_eq!(first.len(), 2);
    let now_retry = RetryPlan {
        policy: RetryPolicy {
            base: Duration::ZERO,
            cap: Duration::ZERO,
        },
        jitter_seed: 1,
    };
    for job in &first {
        let failure = Failure {
            error: AttemptError {
                message: "downstream said no".into(),
                kind: Some("downstream_unavailable".into()),
            },
            retryable: true,
            retry_after: None,
        };
        let ended = store
            .fail(&scope, job.id, &token(job), failure, now_retry, at(1))
            .await
            .unwrap();
        assert_eq!(ended.job.state, JobState::Queued);
    }
    // Two retries, then two first attempts, are ready; the budget holds
    // one token, so one retry runs, the other waits, the first attempts run.
    enqueue_many(store, &scope, (0..2).map(|_| spec("fragile")).collect(), at(1)).await;
    let leased = store
        .lease(&scope, lease_request(&["fragile"], 10, &key), at(1))
        .await
        .unwrap();
    let retries = leased.iter().filter(|l| l.job.attempt == 2).count();
    let firsts = leased.iter().filter(|l| l.job.attempt == 1).count();
    assert_eq!(
        (retries, firsts),
        (1, 2),
        "{:?}",
        leased.iter().map(|l| l.job.attempt).collect::<Vec<_>>()
    );
    assert_eq!(leased.deferred, vec![(QueueName::new("fragile").unwrap(), 1)]);
    let deferred = jobs
        .iter()
        .filter(|job| first.iter().any(|f| f.id == job.id))
        .find(|job| !leased.iter().any(|l| l.job.id == job.id))
        .expect("one retry was not leased");
    let record = store.job(&scope, deferred.id).await.unwrap().unwrap();
    assert_eq!(record.job.state, JobState::Scheduled, "deferred, not failed");
    assert_eq!(
        record.job.attempts_left(),
        deferred.max_attempts - 1,
        "being held spends no attempt"
    );
    assert!(record.job.run_at > at(1));
}

fn calling(queue: &str, resource: &str) -> JobSpec {
    EnqueueRequest {
        resource: Some(resource.to_owned()),
        ..request(queue, "{}")
    }
    .validate(&Limits::default(), [0; 32], t0())
    .expect("valid")
}

fn failure(kind: &str) -> Failure {
    Failure {
        error: AttemptError {
            message: "the downstream said no".into(),
            kind: Some(kind.into()),
        },
        retryable: true,
        retry_after: None,
    }
}

const AT_ONCE: RetryPlan = RetryPlan {
    policy: RetryPolicy {
        base: Duration::ZERO,
        cap: Duration::ZERO,
    },
    jitter_seed: 1,
};

fn breaker() -> ResourceConfig {
    ResourceConfig {
        breaker: Some(Breaker {
            failure_ratio: 0.5,
            min_requests: 4,
            window_secs: 60,
            open_secs: 30,
            half_open_probes: 2,
        }),
        ..ResourceConfig::default()
    }
}

pub async fn a_breaker_opens_probes_and_closes(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let stripe = ResourceName::new("stripe").unwrap();
    store.put_resource(&scope, &stripe, breaker(), t0()).await.unwrap();
    let jobs = enqueue_many(
        store,
        &scope,
        (0..10).map(|_| calling("charges", "stripe")).collect(),
        t0(),
    )
    .await;

    // Closed: 4 outcomes, 3 of them counted failures: over the ratio.
    let first = lease_jobs(store, &scope, lease_request(&["charges"], 4, &key), at(1)).await;
    assert_eq!(first.len(), 4);
    store
        .complete(&scope, first[0].id, &token(&first[0]), "1".into(), at(2))
        .await
        .unwrap();
    store
        .fail(
            &scope,
            first[1].id,
            &token(&first[1]),
            failure("bug_in_job"),
            AT_ONCE,
            at(2),
        )
        .await
        .unwrap();
    let closed = store.resource(&scope, &stripe, at(2)).await.unwrap().unwrap();
    assert_eq!(closed.state.breaker, BreakerState::Closed);
    assert_eq!(
        (closed.state.window_requests, closed.state.window_failures),
        (1, 0),
        "a failure of another kind says nothing about the downstream"
    );
    for job in &first[2..] {
        store
            .fail(
                &scope,
                job.id,
                &token(job),
                failure("downstream_unavailable"),
                AT_ONCE,
                at(3),
            )
            .await
            .unwrap();
    }
    let unleased = lease_jobs(store, &scope, lease_request(&["charges"], 1, &key), at(3)).await;
    assert_eq!(unleased.len(), 1, "still closed after 3 outcomes");
    store
        .fail(
            &scope,
            unleased[0].id,
            &token(&unleased[0]),
            failure("timeout"),
            AT_ONCE,
            at(4),
        )
        .await
        .unwrap();
    let open = store.resource(&scope, &stripe, at(4)).await.unwrap().unwrap();
    assert_eq!(open.state.breaker, BreakerState::Open);
    assert_eq!(open.state.opened_at, Some(at(4)));

    // Open: nothing of the resource is leased, and no attempt is spent.
    let held = store
        .lease(&scope, lease_request(&["charges"], 10, &key), at(10))
        .await
        .unwrap();
    assert!(held.is_empty());
    assert_eq!(held.retry_at, Some(at(34)), "ask again when the breaker half-opens");
    let untouched = store.job(&scope, jobs[9].id).await.unwrap().unwrap().job;
    assert_eq!((untouched.state, untouched.attempt), (JobState::Queued, 0));
    let other = enqueue_one(store, &scope, spec("charges"), at(10)).await;
    let passing = lease_jobs(store, &scope, lease_request(&["charges"], 10, &key), at(10)).await;
    assert_eq!(
        passing.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![other.id],
        "jobs of no resource behind the held ones still go"
    );

    // Half-open after open_secs: exactly two probes.
    let probes = lease_jobs(store, &scope, lease_request(&["charges"], 10, &key), at(34)).await;
    assert_eq!(probes.len(), 2, "half_open_probes leases, no more");
    let none = lease_jobs(store, &scope, lease_request(&["charges"], 10, &key), at(35)).await;
    assert!(none.is_empty());
    // A probe's failure reopens it.
    store
        .fail(
            &scope,
            probes[0].id,
            &token(&probes[0]),
            failure("downstream_unavailable"),
            AT_ONCE,
            at(36),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .resource(&scope, &stripe, at(36))
            .await
            .unwrap()
            .unwrap()
            .state
            .breaker,
        BreakerState::Open
    );
    store
        .complete(&scope, probes[1].id, &token(&probes[1]), "1".into(), at(37))
        .await
        .unwrap();
    assert_eq!(
        store
            .resource(&scope, &stripe, at(37))
            .await
            .unwrap()
            .unwrap()
            .state
            .breaker,
        BreakerState::Open,
        "a success while open changes nothing"
    );

    // Half-open again; a success closes it with a fresh window.
    let probe = lease_jobs(store, &scope, lease_request(&["charges"], 1, &key), at(67)).await;
    assert_eq!(probe.len(), 1);
    store
        .complete(&scope, probe[0].id, &token(&probe[0]), "1".into(), at(68))
        .await
        .unwrap();
    let closed = store.resource(&scope, &stripe, at(68)).await.unwrap().unwrap();
    assert_eq!(closed.state.breaker, BreakerState::Closed);
    assert_eq!(
        (closed.state.window_requests, closed.state.window_started_at),
        (0, at(68))
    );
    let flowing = lease_jobs(store, &scope, lease_request(&["charges"], 10, &key), at(68)).await;
    assert!(flowing.len() >= 4, "closed: the rest flow, got {}", flowing.len());
}

pub async fn a_resource_limits_its_jobs_across_queues(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let name = ResourceName::new("geocoder").unwrap();
    let config = ResourceConfig {
        concurrency: Some(3),
        ..ResourceConfig::default()
    };
    store.put_resource(&scope, &name, config, t0()).await.unwrap();
    enqueue_many(store, &scope, (0..5).map(|_| calling("a", "geocoder")).collect(), t0()).await;
    enqueue_many(store, &scope, (0..5).map(|_| calling("b", "geocoder")).collect(), t0()).await;
    let from_a = lease_jobs(store, &scope, lease_request(&["a"], 10, &key), at(1)).await;
    let from_b = lease_jobs(store, &scope, lease_request(&["b"], 10, &key), at(1)).await;
    assert_eq!((from_a.len(), from_b.len()), (3, 0), "three running over both queues");
    store.cancel(&scope, from_a[0].id, None, at(2)).await.unwrap();
    assert_eq!(
        lease_jobs(store, &scope, lease_request(&["b"], 10, &key), at(2))
            .await
            .len(),
        1
    );

    let listed = store.resources(&scope, at(2)).await.unwrap();
    assert_eq!(
        listed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["geocoder"]
    );
    store.delete_resource(&scope, &name, at(3)).await.unwrap();
    assert_eq!(
        store.delete_resource(&scope, &name, at(3)).await,
        Err(StoreError::NotFound)
    );
    let unheld = lease_jobs(store, &scope, lease_request(&["a", "b"], 10, &key), at(3)).await;
    assert_eq!(unheld.len(), 6, "deleted: its jobs run unheld");
    let refused = store
        .put_resource(
            &scope,
            &name,
            ResourceConfig {
                concurrency: Some(0),
                ..ResourceConfig::default()
            },
            at(4),
        )
        .await;
    assert!(matches!(refused, Err(StoreError::Invalid(_))));
}

pub async fn queue_overviews_count_held_jobs_by_reason(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let mut specs: Vec<JobSpec> = (0..4).map(|_| keyed("sync", Some("acme"))).collect();
    specs.extend((0..2).map(|_| keyed("sync", Some("globex"))));
    enqueue_many(store, &scope, specs, t0()).await;
    enqueue_many(store, &scope, (0..3).map(|_| spec("mail")).collect(), t0()).await;
    set(
        store,
        &scope,
        "sync",
        PolicyPatch {
            key_concurrency: Some(Some(1)),
            ..PolicyPatch::default()
        },
    )
    .await;
    set(
        store,
        &scope,
        "mail",
        PolicyPatch {
            paused: Some(true),
            ..PolicyPatch::default()
        },
    )
    .await;
    set(
        store,
        &scope,
        "empty",
        PolicyPatch {
            concurrency: Some(Some(1)),
            ..PolicyPatch::default()
        },
    )
    .await;
    let leased = lease_jobs(store, &scope, lease_request(&["sync"], 10, &key), at(1)).await;
    assert_eq!(leased.len(), 2);

    let overviews = store.queue_overviews(&scope, at(1)).await.unwrap();
    let names: Vec<&str> = overviews.iter().map(|o| o.queue.as_str()).collect();
    assert_eq!(
        names,
        vec!["empty", "mail", "sync"],
        "queues with jobs or a policy, by name"
    );
    let mail = &overviews[1];
    assert!(mail.policy.paused);
    assert_eq!(mail.held.paused, 3);
    let sync = &overviews[2];
    assert!(sync.counts.contains(&(JobState::Queued, 4)) && sync.counts.contains(&(JobState::Running, 2)));
    assert_eq!(sync.held.key_concurrency, 4, "every ready job's key is at its limit");
    let mut busiest = sync.busiest_keys.clone();
    busiest.sort();
    assert_eq!(busiest, vec![("acme".to_owned(), 1), ("globex".to_owned(), 1)]);

    let (other, _) = new_tenant(store).await;
    assert!(
        store.queue_overviews(&other, at(1)).await.unwrap().is_empty(),
        "another tenant sees none of it"
    );
}

fn singleton(queue: &str, key: &str, mode: Option<&str>, payload: &str, debounce: Option<(i64, i64)>) -> JobSpec {
    EnqueueRequest {
        singleton: Some((key.to_owned(), mode.map(str::to_owned))),
        debounce_ms: debounce.map(|(wait, _)| wait),
        debounce_max_ms: debounce.map(|(_, max)| max),
        ..request(queue, payload)
    }
    .validate(&Limits::default(), [0; 32], t0())
    .expect("valid")
}

async fn enqueue_singleton(store: &impl Store, scope: &TenantScope, spec: JobSpec, now: Timestamp) -> Enqueued {
    store
        .enqueue(scope, vec![new_job(spec)], Limits::default().dedup_window, now)
        .await
        .expect("enqueue")
        .remove(0)
}

pub async fn singletons_skip_or_replace_the_unfinished_job(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let first = enqueue_singleton(
        store,
        &scope,
        singleton("index", "doc-7", None, r#"{"v":1}"#, None),
        at(1),
    )
    .await;
    assert!(first.created());
    let skipped = enqueue_singleton(
        store,
        &scope,
        singleton("index", "doc-7", Some("skip"), r#"{"v":2}"#, None),
        at(2),
    )
    .await;
    assert_eq!(skipped.singleton, Some(SingletonOutcome::Skipped));
    assert_eq!(
        (skipped.job.id, skipped.job.payload.as_str()),
        (first.job.id, r#"{"v":1}"#)
    );
    let replaced = enqueue_singleton(
        store,
        &scope,
        singleton("index", "doc-7", Some("replace"), r#"{"v":3}"#, None),
        at(3),
    )
    .await;
    assert_eq!(replaced.singleton, Some(SingletonOutcome::Replaced));
    assert_eq!(replaced.job.id, first.job.id);
    let stored = store.job(&scope, first.job.id).await.unwrap().unwrap().job;
    assert_eq!(stored.payload, r#"{"v":3}"#, "the new payload is stored");
    assert_eq!(
        super::audit::actions(store, &scope, first.job.id).await,
        vec!["job.enqueued", "job.payload_replaced"]
    );
    let elsewhere = enqueue_singleton(store, &scope, singleton("other", "doc-7", None, "{}", None), at(3)).await;
    assert!(elsewhere.created(), "a key is a singleton within its queue");

    // Once it runs, the payload is fixed: replace is refused, skip answers the running job.
    let running = lease_jobs(store, &scope, lease_request(&["index"], 1, &key), at(4))
        .await
        .remove(0);
    let refused = store
        .enqueue(
            &scope,
            vec![new_job(singleton(
                "index",
                "doc-7",
                Some("replace"),
                r#"{"v":4}"#,
                None,
            ))],
            Limits::default().dedup_window,
            at(5),
        )
        .await;
    assert_eq!(refused, Err(StoreError::SingletonRunning { index: 0 }));
    let skipped = enqueue_singleton(store, &scope, singleton("index", "doc-7", None, "{}", None), at(5)).await;
    assert_eq!((skipped.job.id, skipped.job.state), (running.id, JobState::Running));

    // A job that ran before (a retry waiting its backoff) keeps the payload
    // its attempts and steps saw.
    let failure = Failure {
        error: AttemptError {
            message: "again".into(),
            kind: None,
        },
        retryable: true,
        retry_after: None,
    };
    let retrying = store
        .fail(
            &scope,
            running.id,
            &token(&running),
            failure,
            RetryPlan {
                policy: RetryPolicy {
                    base: Duration::from_secs(60),
                    cap: Duration::from_secs(60),
                },
                jitter_seed: 1,
            },
            at(5),
        )
        .await
        .unwrap();
    assert!(matches!(retrying.job.state, JobState::Scheduled | JobState::Queued));
    let refused = store
        .enqueue(
            &scope,
            vec![new_job(singleton(
                "index",
                "doc-7",
                Some("replace"),
                r#"{"v":6}"#,
                None,
            ))],
            Limits::default().dedup_window,
            at(5),
        )
        .await;
    assert_eq!(refused, Err(StoreError::SingletonRunning { index: 0 }));
    store.fire_timers(at(70), 100).await.unwrap();
    let running = lease_jobs(store, &scope, lease_request(&["index"], 1, &key), at(70))
        .await
        .remove(0);
    assert_eq!(running.payload, r#"{"v":3}"#);

    // Finished: the key is free again.
    store
        .complete(&scope, running.id, &token(&running), "1".into(), at(71))
        .await
        .unwrap();
    let again = enqueue_singleton(
        store,
        &scope,
        singleton("index", "doc-7", None, r#"{"v":5}"#, None),
        at(72),
    )
    .await;
    assert!(again.created());
    assert_ne!(again.job.id, first.job.id);

    // Within one batch, the second enqueue of a key meets the first.
    let batch = store
        .enqueue(
            &scope,
            vec![
                new_job(singleton("index", "doc-9", None, r#"{"v":1}"#, None)),
                new_job(singleton("index", "doc-9", Some("replace"), r#"{"v":2}"#, None)),
            ],
            Limits::default().dedup_window,
            at(8),
        )
        .await
        .unwrap();
    assert!(batch[0].created());
    assert_eq!(batch[1].singleton, Some(SingletonOutcome::Replaced));
    assert_eq!(batch[1].job.id, batch[0].job.id);
    assert_eq!(
        batch[0].job.payload, r#"{"v":2}"#,
        "the earlier answer shows the job as it is"
    );
    let stored = store.job(&scope, batch[0].job.id).await.unwrap().unwrap().job;
    assert_eq!(stored.payload, r#"{"v":2}"#);
}

pub async fn debounce_runs_after_the_last_enqueue_and_never_past_its_max(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let debounced = |payload: &str| singleton("reindex", "site-1", None, payload, Some((10_000, 25_000)));
    let first = enqueue_singleton(store, &scope, debounced(r#"{"n":1}"#), t0()).await;
    assert_eq!((first.job.state, first.job.run_at), (JobState::Scheduled, at(10)));
    for (now, n, run_at) in [(8, 2, 18), (16, 3, 25), (24, 4, 25)] {
        let next = enqueue_singleton(store, &scope, debounced(&format!(r#"{{"n":{n}}}"#)), at(now)).await;
        assert_eq!(next.singleton, Some(SingletonOutcome::Replaced));
        assert_eq!(
            (next.job.id, next.job.run_at),
            (first.job.id, at(run_at)),
            "enqueued at {now}"
        );
    }
    assert!(
        lease_jobs(store, &scope, lease_request(&["reindex"], 1, &key), at(24))
            .await
            .is_empty()
    );
    store.fire_timers(at(25), 100).await.unwrap();
    let leased = lease_jobs(store, &scope, lease_request(&["reindex"], 1, &key), at(25)).await;
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].payload, r#"{"n":4}"#, "the last payload wins");
}

pub async fn concurrent_enqueues_of_one_singleton_make_one_job(store: &(impl Store + Clone)) {
    let (scope, _) = new_tenant(store).await;
    let tasks: Vec<_> = (0..40)
        .map(|n| {
            let (store, scope) = (store.clone(), scope.clone());
            let spec = singleton("digest", "user-1", Some("replace"), &format!(r#"{{"n":{n}}}"#), None);
            tokio::spawn(async move {
                store
                    .enqueue(&scope, vec![new_job(spec)], Limits::default().dedup_window, at(1))
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap().expect("enqueue").remove(0));
    }
    let ids: std::collections::HashSet<JobId> = results.iter().map(|e| e.job.id).collect();
    assert_eq!(ids.len(), 1, "one job for the key");
    assert_eq!(results.iter().filter(|e| e.created()).count(), 1);
}

pub async fn a_held_resource_does_not_stop_the_jobs_behind_it(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let name = ResourceName::new("slow-api").unwrap();
    let config = ResourceConfig {
        concurrency: Some(1),
        ..ResourceConfig::default()
    };
    store.put_resource(&scope, &name, config, t0()).await.unwrap();
    enqueue_many(
        store,
        &scope,
        (0..5).map(|_| calling("mixed", "slow-api")).collect(),
        t0(),
    )
    .await;
    let other = enqueue_one(store, &scope, spec("mixed"), at(1)).await;
    let first = lease_jobs(store, &scope, lease_request(&["mixed"], 1, &key), at(2)).await;
    assert_eq!(first[0].resource.as_ref().map(|r| r.as_str()), Some("slow-api"));
    // The resource is at its limit; its four ready jobs stand first in the
    // queue, yet a lease of one reads past them.
    let next = lease_jobs(store, &scope, lease_request(&["mixed"], 1, &key), at(3)).await;
    assert_eq!(next.iter().map(|j| j.id).collect::<Vec<_>>(), vec![other.id]);

    // The same in a queue served key by key.
    set(
        store,
        &scope,
        "keyed",
        PolicyPatch {
            fairness: Some(Some(Fairness::FlowKey)),
            ..PolicyPatch::default()
        },
    )
    .await;
    let held = EnqueueRequest {
        flow_key: Some("k".into()),
        resource: Some("slow-api".into()),
        ..request("keyed", "{}")
    }
    .validate(&Limits::default(), [0; 32], t0())
    .unwrap();
    enqueue_many(store, &scope, vec![held, keyed("keyed", Some("k"))], at(4)).await;
    let keyed_next = lease_jobs(store, &scope, lease_request(&["keyed"], 1, &key), at(5)).await;
    assert_eq!(keyed_next.len(), 1);
    assert_eq!(keyed_next[0].resource, None, "the key's job behind the held one goes");
}

pub async fn only_probes_decide_a_half_open_breaker(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let stripe = ResourceName::new("stripe").unwrap();
    store.put_resource(&scope, &stripe, breaker(), t0()).await.unwrap();
    enqueue_many(
        store,
        &scope,
        (0..8).map(|_| calling("charges", "stripe")).collect(),
        t0(),
    )
    .await;
    let early = lease_jobs(store, &scope, lease_request(&["charges"], 6, &key), at(1)).await;
    for job in &early[..4] {
        store
            .fail(
                &scope,
                job.id,
                &token(job),
                failure("downstream_unavailable"),
                AT_ONCE,
                at(2),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .resource(&scope, &stripe, at(2))
            .await
            .unwrap()
            .unwrap()
            .state
            .breaker,
        BreakerState::Open
    );
    // Half-open at 32: two probes out.
    let probes = lease_jobs(store, &scope, lease_request(&["charges"], 10, &key), at(32)).await;
    assert_eq!(probes.len(), 2);
    // Jobs leased before it opened report now: they decide nothing.
    let heartbeat = Duration::from_secs(3600);
    for job in &early[4..] {
        store
            .heartbeat(&scope, job.id, &token(job), heartbeat, at(20))
            .await
            .unwrap();
    }
    store
        .complete(&scope, early[4].id, &token(&early[4]), "1".into(), at(33))
        .await
        .unwrap();
    store
        .fail(&scope, early[5].id, &token(&early[5]), failure("bug"), AT_ONCE, at(33))
        .await
        .unwrap();
    let still = store.resource(&scope, &stripe, at(33)).await.unwrap().unwrap();
    assert_eq!(
        (still.state.breaker, still.state.probes_granted),
        (BreakerState::HalfOpen, 2)
    );
    assert!(
        lease_jobs(store, &scope, lease_request(&["charges"], 10, &key), at(33))
            .await
            .is_empty()
    );
    // A changed breaker starts over, closed.
    let mut looser = breaker();
    looser.breaker.as_mut().unwrap().min_requests = 50;
    let reset = store.put_resource(&scope, &stripe, looser, at(34)).await.unwrap();
    assert_eq!(
        (reset.state.breaker, reset.state.probes_granted),
        (BreakerState::Closed, 0)
    );
}

pub async fn a_retried_singleton_does_not_take_a_key_already_held(store: &impl Store) {
    let (scope, _) = new_tenant(store).await;
    let first = enqueue_singleton(store, &scope, singleton("sync", "acct", None, "{}", None), at(1)).await;
    store.cancel(&scope, first.job.id, None, at(2)).await.unwrap();
    let second = enqueue_singleton(store, &scope, singleton("sync", "acct", None, "{}", None), at(3)).await;
    assert!(second.created(), "the cancelled job freed the key");
    let refused = store.retry(&scope, first.job.id, None, at(4)).await;
    assert!(matches!(refused, Err(StoreError::InvalidState { .. })), "{refused:?}");
    store.cancel(&scope, second.job.id, None, at(5)).await.unwrap();
    assert_eq!(
        store.retry(&scope, first.job.id, None, at(6)).await.unwrap().state,
        JobState::Queued
    );
}
