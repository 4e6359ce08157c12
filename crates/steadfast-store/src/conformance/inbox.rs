use std::time::Duration;

use super::*;
use crate::{AuditQuery, InboxEvent, Source, SourceSecret, StoreError};

fn secret(id: &str, created: u64, expires_at: Option<Timestamp>) -> SourceSecret {
    SourceSecret {
        id: id.into(),
        value: format!("whsec_{id}"),
        created_at: at(created),
        expires_at,
    }
}

fn source(id: &str, name: &str) -> Source {
    Source {
        id: id.into(),
        // The store takes the tenant from the scope.
        tenant_id: TenantId(uuid::Uuid::nil()),
        name: name.into(),
        kind: "stripe".into(),
        queue: QueueName::new("payments").unwrap(),
        config: "{}".into(),
        tolerance: Duration::from_secs(300),
        dedup_window: Duration::from_secs(3600),
        created_at: at(0),
        secrets: vec![secret(&format!("{id}-s1"), 0, None)],
    }
}

fn event(source_id: &str, event_id: &str, keys: &[&str], body: &str, received: u64) -> InboxEvent {
    InboxEvent {
        source_id: source_id.into(),
        event_id: event_id.into(),
        received_at: at(received),
        body: body.as_bytes().to_vec(),
        body_sha256: format!("{:x}", body.len()),
        headers: r#"{"content-type":"application/json"}"#.into(),
        verification: r#"{"kind":"stripe"}"#.into(),
        secret_id: format!("{source_id}-s1"),
        dedup_keys: keys.iter().map(|key| key.to_string()).collect(),
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// The first 100 audit records of the scope's chain whose action passes `keep`, in order.
async fn audit_records(
    store: &impl Store,
    scope: &TenantScope,
    keep: impl Fn(&str) -> bool,
) -> Vec<steadfast_core::audit::Record> {
    let query = AuditQuery {
        limit: 100,
        ..AuditQuery::default()
    };
    let records = store.audit_records(scope, query).await.unwrap().records;
    records.into_iter().filter(|record| keep(&record.action)).collect()
}

async fn ingest(store: &impl Store, scope: &TenantScope, event: InboxEvent, now: Timestamp) -> crate::Ingested {
    store
        .ingest(
            scope,
            event,
            new_job(spec("payments")),
            Duration::from_secs(3600),
            None,
            now,
        )
        .await
        .expect("ingest")
}

pub async fn sources_keep_their_secrets_and_rotate_without_a_gap(store: &impl Store) {
    let (scope, _) = new_tenant(store).await;
    let (other, _) = new_tenant(store).await;
    let id = unique("src");
    let created = store
        .create_source(&scope, source(&id, "stripe-live"), 100, at(1))
        .await
        .unwrap();
    assert_eq!(created.tenant_id, scope.tenant_id(), "the scope names the tenant");
    assert_eq!(
        store
            .create_source(&scope, source(&unique("src"), "stripe-live"), 100, at(1))
            .await,
        Err(StoreError::AlreadyExists),
        "names are unique within a tenant"
    );
    store
        .create_source(&other, source(&unique("src"), "stripe-live"), 100, at(1))
        .await
        .expect("another tenant may use the name");

    let found = store.find_source(&id).await.unwrap().expect("found across tenants");
    assert_eq!((found.tenant_id, found.secrets.len()), (scope.tenant_id(), 1));
    assert_eq!(found.secrets[0].value, format!("whsec_{id}-s1"));
    assert_eq!(
        store.source(&other, &id).await.unwrap(),
        None,
        "another tenant never sees it"
    );
    assert_eq!(
        store
            .add_source_secret(&other, &id, secret("x", 2, None), None, at(2))
            .await,
        Err(StoreError::NotFound)
    );

    let retire_at = at(100);
    let rotated = store
        .add_source_secret(
            &scope,
            &id,
            secret(&format!("{id}-s2"), 2, None),
            Some(retire_at),
            at(2),
        )
        .await
        .unwrap();
    let expiries: Vec<Option<Timestamp>> = rotated.secrets.iter().map(|s| s.expires_at).collect();
    assert_eq!(
        expiries,
        [Some(retire_at), None],
        "the old secret retires, the new one stays"
    );
    assert!(rotated.secrets[0].valid_at(at(99)) && !rotated.secrets[0].valid_at(retire_at));

    // A secret already expired is deleted by the next change.
    let later = store
        .add_source_secret(&scope, &id, secret(&format!("{id}-s3"), 200, None), None, at(200))
        .await
        .unwrap();
    let ids: Vec<String> = later.secrets.iter().map(|s| s.id.clone()).collect();
    assert_eq!(ids, [format!("{id}-s2"), format!("{id}-s3")]);

    assert_eq!(
        store
            .create_source(&other, source(&unique("src"), "second"), 1, at(1))
            .await,
        Err(StoreError::LimitExceeded {
            what: "sources per tenant",
            limit: 1
        }),
        "the tenant's cap counts live sources"
    );

    let listed = store.list_sources(&scope).await.unwrap();
    assert_eq!(listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [id.as_str()]);

    store.delete_source(&scope, &id, at(3)).await.unwrap();
    assert_eq!(
        store.find_source(&id).await.unwrap(),
        None,
        "deliveries to a deleted source are refused"
    );
    assert_eq!(store.delete_source(&scope, &id, at(3)).await, Err(StoreError::NotFound));
    store
        .create_source(&scope, source(&unique("src"), "stripe-live"), 100, at(4))
        .await
        .expect("a deleted source's name is free again");

    let actions: Vec<String> = audit_records(store, &scope, |action| action.starts_with("source."))
        .await
        .into_iter()
        .map(|record| record.action)
        .collect();
    assert_eq!(
        actions,
        [
            "source.created",
            "source.secret_added",
            "source.deleted",
            "source.created",
            // The s3 secret, added at a later time than the rest.
            "source.secret_added",
        ]
    );
}

pub async fn an_event_becomes_one_job_however_often_it_arrives(store: &impl Store) {
    let (scope, _) = new_tenant(store).await;
    let id = unique("src");
    store
        .create_source(&scope, source(&id, "stripe"), 100, at(0))
        .await
        .unwrap();
    let hook = auth::verified_webhook(&store.find_source(&id).await.unwrap().unwrap());

    let first = ingest(
        store,
        &hook,
        event(&id, "evt_1", &["id:evt_1"], r#"{"id":"evt_1"}"#, 1),
        at(1),
    )
    .await;
    assert!(!first.duplicate);
    let job = first.job.clone().expect("a new event makes a job");
    assert_eq!((first.job_id, first.event_id.as_str()), (job.id, "evt_1"));
    let stored = store.event(&scope, &id, "evt_1").await.unwrap().expect("stored");
    assert_eq!(
        stored.body.as_deref(),
        Some(&br#"{"id":"evt_1"}"#[..]),
        "the exact bytes are kept"
    );
    assert_eq!(
        (stored.job_id, stored.seq, stored.body_bytes),
        (job.id, first.event_seq, 14)
    );

    let again = ingest(
        store,
        &hook,
        event(&id, "evt_1", &["id:evt_1"], r#"{"id":"evt_1"}"#, 2),
        at(2),
    )
    .await;
    assert!(again.duplicate && again.job.is_none());
    assert_eq!((again.job_id, again.event_seq), (job.id, first.event_seq));
    let counted = store.event(&scope, &id, "evt_1").await.unwrap().unwrap();
    assert_eq!((counted.duplicates, counted.last_duplicate_at), (1, Some(at(2))));

    // A body replayed under a new delivery id is caught by its hash.
    let keys = ["id:d-1", "sha256:abc"];
    let hashed = ingest(store, &hook, event(&id, "d-1", &keys, "{}", 3), at(3)).await;
    assert!(!hashed.duplicate);
    let replayed = ingest(
        store,
        &hook,
        event(&id, "d-2", &["id:d-2", "sha256:abc"], "{}", 4),
        at(4),
    )
    .await;
    assert!(replayed.duplicate);
    assert_eq!(
        (replayed.job_id, replayed.event_id.as_str()),
        (hashed.job_id, "d-1"),
        "the first delivery's event"
    );

    // At its quota a tenant still has its duplicates answered; new events are refused.
    let window = Duration::from_secs(3600);
    let quota = || Some(StoreError::QuotaExceeded { limit: 1 });
    let resent = event(&id, "d-3", &["id:d-3", "sha256:abc"], "{}", 5);
    let dup = store
        .ingest(&hook, resent, new_job(spec("payments")), window, quota(), at(5))
        .await
        .unwrap();
    assert!(dup.duplicate);
    let new = event(&id, "d-4", &["id:d-4", "sha256:def"], "[]", 5);
    let refused = store
        .ingest(&hook, new, new_job(spec("payments")), window, quota(), at(5))
        .await;
    assert_eq!(refused, Err(StoreError::QuotaExceeded { limit: 1 }));
    assert_eq!(store.event(&scope, &id, "d-4").await.unwrap(), None, "nothing stored");

    // After the window, the same id is a new event.
    let later = at(1 + 3600);
    let fresh = ingest(
        store,
        &hook,
        event(&id, "evt_1", &["id:evt_1"], r#"{"id":"evt_1"}"#, 3601),
        later,
    )
    .await;
    assert!(!fresh.duplicate);
    assert_ne!(fresh.job_id, job.id);

    let record = store.job(&scope, job.id).await.unwrap().expect("the job exists");
    assert_eq!(record.job.queue.as_str(), "payments");
    let linked = store
        .job_event(&scope, job.id)
        .await
        .unwrap()
        .expect("the job knows its event");
    assert_eq!(
        (linked.source_id.as_str(), linked.event_id.as_str(), linked.replay),
        (id.as_str(), "evt_1", false)
    );

    let enqueued: Vec<_> = audit_records(store, &scope, |action| action == "job.enqueued").await;
    assert_eq!(enqueued.len(), 3, "one job per new event, none per duplicate");
    assert_eq!(
        enqueued[0].actor,
        steadfast_core::audit::Actor::Source { source_id: id.clone() }
    );
}

pub async fn events_list_replay_and_stay_within_their_tenant(store: &impl Store) {
    let (scope, _) = new_tenant(store).await;
    let (other, _) = new_tenant(store).await;
    let id = unique("src");
    store
        .create_source(&scope, source(&id, "github"), 100, at(0))
        .await
        .unwrap();
    let hook = auth::verified_webhook(&store.find_source(&id).await.unwrap().unwrap());
    for n in 0..3 {
        let event_id = format!("evt_{n}");
        ingest(
            store,
            &hook,
            event(&id, &event_id, &[&format!("id:{event_id}")], "{}", n),
            at(n),
        )
        .await;
    }
    let page = store.list_events(&scope, &id, 2, None).await.unwrap();
    let ids: Vec<&str> = page.events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["evt_2", "evt_1"], "newest first");
    let rest = store.list_events(&scope, &id, 2, page.next_cursor).await.unwrap();
    assert_eq!(
        rest.events.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(),
        ["evt_0"]
    );
    assert_eq!(rest.next_cursor, None);
    assert!(
        store
            .list_events(&other, &id, 10, None)
            .await
            .unwrap()
            .events
            .is_empty()
    );
    assert_eq!(store.event(&other, &id, "evt_1").await.unwrap(), None);

    let stored = store.event(&scope, &id, "evt_1").await.unwrap().expect("stored");
    assert_eq!(
        store
            .replay_event(&other, &id, stored.seq, new_job(spec("payments")), at(5))
            .await,
        Err(StoreError::NotFound),
        "another tenant cannot replay it"
    );
    let replay = store
        .replay_event(&scope, &id, stored.seq, new_job(spec("payments")), at(5))
        .await
        .unwrap();
    assert_ne!(replay.id, stored.job_id);
    let after = store.event(&scope, &id, "evt_1").await.unwrap().unwrap();
    assert_eq!(after.replays, [replay.id]);
    let linked = store.job_event(&scope, replay.id).await.unwrap().unwrap();
    assert_eq!((linked.event_seq, linked.replay), (stored.seq, true));
    assert_eq!(store.job_event(&other, replay.id).await.unwrap(), None);

    let replayed = audit_records(store, &scope, |action| action == "inbox.event_replayed")
        .await
        .len();
    assert_eq!(replayed, 1);

    // Retention: events go once their window ended, with their keys.
    let removed = store.prune_events(at(2 + 3600), 1000).await.unwrap();
    assert!(removed >= 2, "evt_0 and evt_1 ended before evt_2's window: {removed}");
    let left: Vec<String> = store
        .list_events(&scope, &id, 10, None)
        .await
        .unwrap()
        .events
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(left, ["evt_2"]);
    assert_eq!(store.job_event(&scope, replay.id).await.unwrap(), None);
}

pub async fn concurrent_deliveries_of_one_event_make_one_job(store: &(impl Store + Clone)) {
    let (scope, _) = new_tenant(store).await;
    let id = unique("src");
    store
        .create_source(&scope, source(&id, "standard"), 100, at(0))
        .await
        .unwrap();
    let hook = auth::verified_webhook(&store.find_source(&id).await.unwrap().unwrap());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (store, hook, delivery) = (store.clone(), hook.clone(), event(&id, "msg_1", &["id:msg_1"], "{}", 1));
            tokio::spawn(async move {
                let job = new_job(spec("payments"));
                store
                    .ingest(&hook, delivery, job, Duration::from_secs(3600), None, at(1))
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap().expect("ingest"));
    }
    let jobs: std::collections::HashSet<JobId> = results.iter().map(|r| r.job_id).collect();
    assert_eq!(jobs.len(), 1, "every delivery names the one job");
    assert_eq!(results.iter().filter(|r| !r.duplicate).count(), 1);
    let page = store.list_events(&scope, &id, 10, None).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].duplicates, 19);
}
