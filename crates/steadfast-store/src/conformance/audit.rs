use steadfast_core::audit::{Actor, Breach, Head, Record};
use steadfast_core::{ApiKeySecret, Role};

use super::*;
use crate::audit::{VerifyError, verify};
use steadfast_core::{AttemptOutcome, JobState};

use crate::{AuditQuery, Completing, Principal, RetryPlan, StoreError};

/// A job's audit records, oldest first.
pub(super) async fn job_records(store: &impl Store, scope: &TenantScope, job: JobId) -> Vec<Record> {
    let query = AuditQuery {
        job_id: Some(job),
        limit: 100,
        ..AuditQuery::default()
    };
    store.audit_records(scope, query).await.unwrap().records
}

/// The actions of a job's audit records, oldest first.
pub(super) async fn actions(store: &impl Store, scope: &TenantScope, job: JobId) -> Vec<String> {
    job_records(store, scope, job)
        .await
        .into_iter()
        .map(|r| r.action)
        .collect()
}

/// A scope as an API key's request would have it.
async fn key_scope(store: &impl Store, scope: &TenantScope) -> Principal {
    let secret = ApiKeySecret::from_random(*uuid::Uuid::now_v7().as_bytes().last_chunk::<8>().unwrap(), [5; 32]);
    let key = NewApiKey {
        key_id: secret.key_id().clone(),
        name: "ci-bot".into(),
        role: Role::Admin,
        secret_hash: secret.secret_hash(),
        expires_at: None,
    };
    store.create_key(scope, key, t0()).await.unwrap();
    let stored = store.find_key(secret.key_id()).await.unwrap();
    let principal = auth::authenticate(&secret, stored, t0()).unwrap();
    Principal {
        scope: principal.scope.clone().with_request_id(Some("req-42".into())),
        ..principal
    }
}

pub async fn every_change_leaves_one_audit_record(store: &impl Store) {
    let (operator, key) = new_tenant(store).await;
    let caller = key_scope(store, &operator).await;
    let scope = &caller.scope;
    let job = enqueue_one(store, scope, spec("audited"), at(1)).await;
    let leased = lease_jobs(store, scope, lease_request(&["audited"], 1, &key), at(2))
        .await
        .remove(0);
    store
        .complete(scope, job.id, &token(&leased), r#"{"done":true}"#.into(), at(3))
        .await
        .unwrap();
    assert_eq!(
        actions(store, scope, job.id).await,
        ["job.enqueued", "job.leased", "job.succeeded"]
    );

    let records = store
        .audit_records(
            scope,
            AuditQuery {
                job_id: Some(job.id),
                limit: 10,
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap()
        .records;
    let enqueued = &records[0];
    assert_eq!(
        enqueued.actor,
        Actor::Key {
            key_id: caller.key_id.clone(),
            name: "ci-bot".into()
        }
    );
    assert_eq!(enqueued.request_id.as_deref(), Some("req-42"));
    assert_eq!(enqueued.target, job.id.to_string());
    assert_eq!(enqueued.at, at(1));
    assert!(
        records[2].summary.contains(r#""output":{"done":true}"#),
        "{}",
        records[2].summary
    );
    assert!(
        records
            .windows(2)
            .all(|w| w[1].seq == w[0].seq + 1 && w[1].prev_hash == w[0].hash)
    );

    // The operator's own actions are in the same chain: tenant and keys.
    let all = store
        .audit_records(
            &operator,
            AuditQuery {
                limit: 100,
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap()
        .records;
    assert_eq!(all[0].action, "tenant.created");
    assert_eq!(all[0].actor, Actor::Operator);
    assert_eq!(all.iter().filter(|r| r.action == "key.created").count(), 2);
    let verified = verify(store, &operator, &[]).await.unwrap();
    assert_eq!(verified.records as usize, all.len());
}

pub async fn a_refused_change_leaves_no_record(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let before = verify(store, &scope, &[]).await.unwrap().records;
    let keyed = |payload: &str, fingerprint: u8| {
        EnqueueRequest {
            idempotency_key: Some("k".into()),
            ..request("q", payload)
        }
        .validate(&Limits::default(), [fingerprint; 32], t0())
        .unwrap()
    };
    store
        .enqueue(&scope, vec![new_job(keyed("{}", 1))], Duration::from_secs(60), t0())
        .await
        .unwrap();
    let refused = store
        .enqueue(
            &scope,
            vec![new_job(spec("q")), new_job(spec("q")), new_job(keyed("{\"x\":1}", 2))],
            Duration::from_secs(60),
            t0(),
        )
        .await;
    assert_eq!(refused, Err(StoreError::IdempotencyKeyReused { index: 2 }));
    let leased = lease_jobs(store, &scope, lease_request(&["q"], 1, &key), at(1))
        .await
        .remove(0);
    let stale = store.complete(&scope, leased.id, "lt_stale", "1".into(), at(2)).await;
    assert_eq!(stale, Err(StoreError::LeaseLost));
    let policy = RetryPlan {
        policy: steadfast_core::RetryPolicy::default(),
        jitter_seed: 1,
    };
    let failure = steadfast_core::lifecycle::Failure {
        error: steadfast_core::AttemptError {
            message: "x".into(),
            kind: None,
        },
        retryable: true,
        retry_after: None,
    };
    assert_eq!(
        store.fail(&scope, leased.id, "lt_stale", failure, policy, at(2)).await,
        Err(StoreError::LeaseLost)
    );
    let after = verify(store, &scope, &[]).await.unwrap().records;
    assert_eq!(
        after - before,
        2,
        "one enqueue and one lease: the refused batch and calls left nothing"
    );
}

pub async fn retention_keeps_the_remaining_chain_verifiable(store: &impl Store) {
    let (scope, _) = new_tenant(store).await;
    for i in 0..5 {
        enqueue_one(store, &scope, spec("old"), at(i)).await;
    }
    enqueue_one(store, &scope, spec("new"), at(1000)).await;
    let head_before = verify(store, &scope, &[]).await.unwrap().head.unwrap();
    let removed = store.prune_audit(at(500), 1000, at(2000)).await.unwrap();
    assert!(removed >= 5, "the old records went ({removed})");
    let verified = verify(store, &scope, &[head_before]).await.unwrap();
    let base = verified.base.expect("a pruned chain starts from a stored base");
    assert!(base.seq >= 6, "tenant.created, key.created and five enqueues were old");
    let remaining = store
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
    assert_eq!(remaining.first().unwrap().seq, base.seq + 1);
    assert_eq!(
        remaining.last().unwrap().action,
        "audit.pruned",
        "pruning is itself recorded"
    );
    assert!(remaining.iter().all(|r| r.at >= at(500) || r.action == "audit.pruned"));
}

pub async fn audit_queries_filter_by_time_action_actor_and_job(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let first = enqueue_one(store, &scope, spec("q"), at(10)).await;
    let second = enqueue_one(store, &scope, spec("q"), at(20)).await;
    lease_jobs(store, &scope, lease_request(&["q"], 2, &key), at(30)).await;
    let scope_ref = &scope;
    let query = |q: AuditQuery| async move {
        store
            .audit_records(scope_ref, AuditQuery { limit: 100, ..q })
            .await
            .unwrap()
            .records
    };

    let window = query(AuditQuery {
        since: Some(at(15)),
        until: Some(at(30)),
        ..AuditQuery::default()
    })
    .await;
    assert_eq!(
        window.iter().map(|r| r.target.clone()).collect::<Vec<_>>(),
        vec![second.id.to_string()]
    );
    let leases = query(AuditQuery {
        action: Some("job.leased".into()),
        ..AuditQuery::default()
    })
    .await;
    assert_eq!(leases.len(), 2);
    let by_operator = query(AuditQuery {
        actor: Some("operator".into()),
        ..AuditQuery::default()
    })
    .await;
    assert!(by_operator.iter().all(|r| r.actor == Actor::Operator) && !by_operator.is_empty());
    let lineage = query(AuditQuery {
        job_id: Some(first.id),
        ..AuditQuery::default()
    })
    .await;
    assert_eq!(
        lineage.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        ["job.enqueued", "job.leased"]
    );

    let page = store
        .audit_records(
            &scope,
            AuditQuery {
                limit: 2,
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap();
    let rest = store
        .audit_records(
            &scope,
            AuditQuery {
                limit: 100,
                after: page.next,
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page.records.len() + rest.records.len(),
        query(AuditQuery::default()).await.len()
    );
    assert_eq!(rest.records[0].seq, page.records[1].seq + 1);
}

pub async fn a_checkpoint_beyond_the_log_is_a_truncation(store: &impl Store) {
    let (scope, _) = new_tenant(store).await;
    enqueue_one(store, &scope, spec("q"), at(1)).await;
    let head = verify(store, &scope, &[]).await.unwrap().head.unwrap();
    let from_the_future = Head {
        seq: head.seq + 5,
        hash: [9; 32],
    };
    match verify(store, &scope, &[from_the_future]).await {
        Err(VerifyError::Breach(Breach::Truncated {
            checkpoint_seq,
            last_seq,
        })) => {
            assert_eq!((checkpoint_seq, last_seq), (head.seq + 5, head.seq));
        }
        other => panic!("expected a truncation, got {other:?}"),
    }
    let wrong_hash = Head {
        seq: head.seq,
        hash: [9; 32],
    };
    assert!(matches!(
        verify(store, &scope, &[wrong_hash]).await,
        Err(VerifyError::Breach(Breach::CheckpointMismatch { .. }))
    ));
}

pub async fn failed_authentication_is_recorded(store: &impl Store) {
    use crate::audit::AuthFailures;

    let (scope, _) = new_tenant(store).await;
    let keys = store.list_keys(&scope).await.unwrap();
    let wrong_secret = AuthFailures {
        key_id: Some(keys[0].key_id.clone()),
        count: 3,
        first_at: at(1),
        last_at: at(4),
        addresses: vec![("192.0.2.7".into(), 2), ("192.0.2.8".into(), 1)],
        other_addresses: 0,
    };
    store.record_auth_failures(&wrong_secret, at(5)).await.unwrap();
    let failures = store
        .audit_records(
            &scope,
            AuditQuery {
                action: Some("auth.failed".into()),
                limit: 10,
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap()
        .records;
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].target.as_str(), keys[0].key_id.as_str());
    let summary: serde_json::Value = serde_json::from_str(&failures[0].summary).unwrap();
    assert_eq!(summary["count"], 3);
    assert_eq!(summary["addresses"][0]["address"], "192.0.2.7");

    let unknown = AuthFailures {
        key_id: None,
        other_addresses: 5,
        ..wrong_secret
    };
    store.record_auth_failures(&unknown, at(6)).await.unwrap();
    let system = crate::auth::system_chain_operator();
    let query = AuditQuery {
        action: Some("auth.failed".into()),
        limit: 10,
        ..AuditQuery::default()
    };
    let records = store.audit_records(&system, query).await.unwrap().records;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].target, "unknown keys");
    assert!(verify(store, &scope, &[]).await.is_ok());
    assert!(verify(store, &system, &[]).await.is_ok());
}

pub async fn a_batch_of_completions_is_judged_item_by_item(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let first = enqueue_one(store, &scope, spec("batch"), t0()).await;
    let second = enqueue_one(store, &scope, spec("batch"), t0()).await;
    let leased = lease_jobs(store, &scope, lease_request(&["batch"], 2, &key), at(1)).await;
    assert_eq!(leased.len(), 2);
    let token_of = |id: JobId| token(leased.iter().find(|job| job.id == id).unwrap());
    let missing = JobId(uuid::Uuid::now_v7());
    let items = vec![
        Completing {
            id: second.id,
            token: token_of(second.id),
            output: "2".into(),
        },
        Completing {
            id: first.id,
            token: format!("{}x", token_of(first.id)),
            output: "1".into(),
        },
        Completing {
            id: missing,
            token: "whatever".into(),
            output: "3".into(),
        },
    ];
    let results = store.complete_many(&scope, items, at(2)).await.unwrap();
    assert_eq!(results.len(), 3, "one result per item, in order");
    let done = results[0].as_ref().expect("the current lease completes");
    assert_eq!((done.id, done.state), (second.id, JobState::Succeeded));
    assert_eq!(done.output.as_deref(), Some("2"));
    assert_eq!(
        done.attempt.as_ref().map(|a| a.outcome),
        Some(AttemptOutcome::Succeeded)
    );
    assert_eq!(
        results[1],
        Err(StoreError::LeaseLost),
        "a stale token rejects only its item"
    );
    assert_eq!(results[2], Err(StoreError::NotFound));

    let untouched = store.job(&scope, first.id).await.unwrap().unwrap();
    assert_eq!(
        untouched.job.state,
        JobState::Running,
        "the rejected item did not change"
    );
    assert!(untouched.attempts.is_empty());
    assert_eq!(actions(store, &scope, first.id).await, ["job.enqueued", "job.leased"]);
    assert_eq!(
        actions(store, &scope, second.id).await,
        ["job.enqueued", "job.leased", "job.succeeded"]
    );
    verify(store, &scope, &[]).await.expect("the chain verifies");
}

pub async fn audit_signing_keys_are_registered_once_and_rotated_on_purpose(store: &impl Store) {
    use crate::decide::{KeyChange, SigningKeyRefused};

    assert!(store.signing_keys().await.unwrap().is_empty());
    let first = store.register_signing_key("aa", KeyChange::Start, at(1)).await.unwrap();
    assert_eq!(first.map(|key| key.position), Some(1));
    assert_eq!(
        store.register_signing_key("aa", KeyChange::Start, at(2)).await.unwrap(),
        None
    );
    assert!(matches!(
        store.register_signing_key("bb", KeyChange::Start, at(2)).await,
        Err(StoreError::SigningKey(SigningKeyRefused::NotCurrent { .. }))
    ));

    let rotated = store
        .register_signing_key("bb", KeyChange::Rotate, at(3))
        .await
        .unwrap();
    assert_eq!(rotated.map(|key| key.position), Some(2));
    assert!(matches!(
        store.register_signing_key("aa", KeyChange::Start, at(4)).await,
        Err(StoreError::SigningKey(SigningKeyRefused::Retired { .. }))
    ));
    let keys = store.signing_keys().await.unwrap();
    let listed: Vec<(&str, Timestamp)> = keys
        .iter()
        .map(|key| (key.public_key.as_str(), key.registered_at))
        .collect();
    assert_eq!(listed, [("aa", at(1)), ("bb", at(3))]);

    // Both registrations are in the system chain, which verifies.
    let system = crate::auth::system_chain_operator();
    let query = AuditQuery {
        action: Some("audit.key_registered".into()),
        limit: 10,
        ..AuditQuery::default()
    };
    let records = store.audit_records(&system, query).await.unwrap().records;
    let actors: Vec<(&str, &Actor)> = records.iter().map(|r| (r.target.as_str(), &r.actor)).collect();
    assert_eq!(actors, [("aa", &Actor::System), ("bb", &Actor::Operator)]);
    assert!(verify(store, &system, &[]).await.is_ok());
}
