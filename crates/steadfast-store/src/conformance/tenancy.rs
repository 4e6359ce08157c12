use steadfast_core::{ApiKeySecret, JobState, Role, TenantId, TenantName};

use super::*;
use crate::{JobQuery, StoreError};

pub async fn tenants_and_keys_round_trip(store: &impl Store) {
    let name = TenantName::new(format!("acme-{}", uuid::Uuid::now_v7().simple())).unwrap();
    let tenant = store
        .create_tenant(TenantId(uuid::Uuid::now_v7()), &name, t0())
        .await
        .unwrap();
    assert_eq!(
        store.create_tenant(TenantId(uuid::Uuid::now_v7()), &name, t0()).await,
        Err(StoreError::AlreadyExists)
    );
    assert_eq!(store.tenant_by_name(&name).await.unwrap(), Some(tenant.clone()));
    assert!(store.list_tenants().await.unwrap().contains(&tenant));

    let scope = auth::local_operator(&tenant);
    let secret = ApiKeySecret::from_random([3; 8], [9; 32]);
    let key = NewApiKey {
        key_id: secret.key_id().clone(),
        name: "ci".into(),
        role: Role::Producer,
        secret_hash: secret.secret_hash(),
        expires_at: None,
    };
    let info = store.create_key(&scope, key, t0()).await.unwrap();
    assert_eq!(
        (info.role, info.tenant_id, info.revoked_at),
        (Role::Producer, tenant.id, None)
    );

    let stored = store.find_key(secret.key_id()).await.unwrap();
    let principal = auth::authenticate(&secret, stored, at(1)).expect("a stored key authenticates");
    assert_eq!(principal.scope.tenant_id(), scope.tenant_id());
    assert_eq!(principal.role, Role::Producer);

    let wrong_secret = ApiKeySecret::from_random([3; 8], [8; 32]);
    let stored = store.find_key(secret.key_id()).await.unwrap();
    assert!(auth::authenticate(&wrong_secret, stored, at(1)).is_err());
    let keys = store.list_keys(&scope).await.unwrap();
    assert_eq!(keys, vec![info]);
}

pub async fn revoked_keys_no_longer_authenticate(store: &impl Store) {
    let (scope, _) = new_tenant(store).await;
    let secret = ApiKeySecret::from_random(*uuid::Uuid::now_v7().as_bytes().last_chunk::<8>().unwrap(), [1; 32]);
    let key = NewApiKey {
        key_id: secret.key_id().clone(),
        name: "k".into(),
        role: Role::Admin,
        secret_hash: secret.secret_hash(),
        expires_at: None,
    };
    store.create_key(&scope, key, t0()).await.unwrap();
    let revoked = store.revoke_key(secret.key_id(), at(10)).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(at(10)));
    let again = store.revoke_key(secret.key_id(), at(20)).await.unwrap();
    assert_eq!(again.revoked_at, Some(at(10)), "the first revocation time is kept");
    let stored = store.find_key(secret.key_id()).await.unwrap();
    assert!(auth::authenticate(&secret, stored, at(11)).is_err());
    let unknown = KeyId::from_random([0xee; 8]);
    assert_eq!(store.revoke_key(&unknown, at(1)).await, Err(StoreError::NotFound));
    assert_eq!(store.find_key(&unknown).await.unwrap(), None);
}

pub async fn tenants_never_see_each_other(store: &impl Store) {
    let (a, a_key) = new_tenant(store).await;
    let (b, b_key) = new_tenant(store).await;
    let keyed = |payload: &str| {
        EnqueueRequest {
            idempotency_key: Some("same-key".into()),
            ..request("shared", payload)
        }
        .validate(&Limits::default(), [payload.len() as u8; 32], t0())
        .unwrap()
    };
    let job_a = enqueue_one(store, &a, keyed("{\"a\":1}"), t0()).await;
    let job_b = enqueue_one(store, &b, keyed("{}"), t0()).await;
    assert_ne!(job_a.id, job_b.id, "idempotency keys are per tenant");

    assert_eq!(store.job(&b, job_a.id).await.unwrap(), None);
    let listed = store
        .list_jobs(
            &b,
            JobQuery {
                queue: None,
                state: None,
                limit: 100,
                after: None,
                ..JobQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![job_b.id]);

    let leased_by_b = lease_jobs(store, &b, lease_request(&["shared"], 10, &b_key), t0()).await;
    assert_eq!(leased_by_b.iter().map(|j| j.id).collect::<Vec<_>>(), vec![job_b.id]);
    let leased_by_a = lease_jobs(store, &a, lease_request(&["shared"], 10, &a_key), t0()).await;
    let token_a = token(&leased_by_a[0]);

    let not_found = Some(StoreError::NotFound);
    assert_eq!(
        store.complete(&b, job_a.id, &token_a, "1".into(), at(1)).await.err(),
        not_found
    );
    let beat = store
        .heartbeat(&b, job_a.id, &token_a, Duration::from_secs(5), at(1))
        .await;
    assert_eq!(beat.err(), not_found);
    assert_eq!(store.cancel(&b, job_a.id, None, at(1)).await.err(), not_found);
    assert_eq!(store.retry(&b, job_a.id, None, at(1)).await.err(), not_found);
    let state_a = store.job(&a, job_a.id).await.unwrap().unwrap().job.state;
    assert_eq!(state_a, JobState::Running, "nothing B did touched A's job");
}

/// A new key for `scope` (random id), with `expires_at`; the secret and the key.
fn lifecycle_key(name: &str, expires_at: Option<Timestamp>) -> (ApiKeySecret, NewApiKey) {
    let secret = ApiKeySecret::from_random(*uuid::Uuid::now_v7().as_bytes().last_chunk::<8>().unwrap(), [4; 32]);
    let key = NewApiKey {
        key_id: secret.key_id().clone(),
        name: name.into(),
        role: Role::Worker,
        secret_hash: secret.secret_hash(),
        expires_at,
    };
    (secret, key)
}

async fn authenticates(store: &impl Store, secret: &ApiKeySecret, now: Timestamp) -> bool {
    let stored = store.find_key(secret.key_id()).await.unwrap();
    auth::authenticate(secret, stored, now).is_ok()
}

pub async fn keys_expire_rotate_with_a_grace_and_note_their_last_use(store: &impl Store) {
    let (scope, _) = new_tenant(store).await;
    let (expiring, key) = lifecycle_key("expiring", Some(at(100)));
    assert_eq!(
        store.create_key(&scope, key, t0()).await.unwrap().expires_at,
        Some(at(100))
    );
    assert!(authenticates(store, &expiring, at(99)).await);
    assert!(
        !authenticates(store, &expiring, at(100)).await,
        "an expired key is refused"
    );

    // Rotation with a grace: the old key works until the grace ends.
    let (old, key) = lifecycle_key("deploy", None);
    store.create_key(&scope, key, t0()).await.unwrap();
    let (new, mut replacement) = lifecycle_key("deploy", None);
    replacement.role = Role::Admin;
    let (created, old_info) = store
        .rotate_key(old.key_id(), replacement, at(60), at(10))
        .await
        .unwrap();
    assert_eq!(created.role, Role::Worker, "the new key keeps the old key's role");
    assert_eq!(old_info.revoked_at, Some(at(60)));
    assert!(authenticates(store, &new, at(11)).await);
    assert!(authenticates(store, &old, at(59)).await);
    assert!(!authenticates(store, &old, at(60)).await);
    let (_, again) = lifecycle_key("again", None);
    assert_eq!(
        store.rotate_key(old.key_id(), again, at(70), at(61)).await,
        Err(StoreError::KeyNotActive)
    );
    let (_, again) = lifecycle_key("again", None);
    let unknown = KeyId::from_random([0xef; 8]);
    assert_eq!(
        store.rotate_key(&unknown, again, at(70), at(61)).await,
        Err(StoreError::NotFound)
    );

    // Revoking now brings a scheduled revocation forward.
    let (_, newer) = lifecycle_key("deploy", None);
    store.rotate_key(new.key_id(), newer, at(500), at(20)).await.unwrap();
    assert_eq!(
        store.revoke_key(new.key_id(), at(30)).await.unwrap().revoked_at,
        Some(at(30))
    );
    assert!(!authenticates(store, &new, at(31)).await);

    // Last use: at most one write per key per resolution.
    store.record_key_use(expiring.key_id(), at(1)).await.unwrap();
    store.record_key_use(expiring.key_id(), at(30)).await.unwrap();
    let last_used = |keys: Vec<crate::ApiKeyInfo>| {
        keys.into_iter()
            .find(|key| key.key_id == *expiring.key_id())
            .unwrap()
            .last_used_at
    };
    assert_eq!(last_used(store.list_keys(&scope).await.unwrap()), Some(at(1)));
    store.record_key_use(expiring.key_id(), at(61)).await.unwrap();
    assert_eq!(last_used(store.list_keys(&scope).await.unwrap()), Some(at(61)));

    let trail: Vec<String> = store
        .audit_records(
            &scope,
            crate::AuditQuery {
                limit: 100,
                ..crate::AuditQuery::default()
            },
        )
        .await
        .unwrap()
        .records
        .into_iter()
        .filter(|record| record.action.starts_with("key."))
        .map(|record| record.action)
        .collect();
    assert_eq!(
        trail,
        [
            "key.created", // new_tenant's own key
            "key.created",
            "key.created",
            "key.created",
            "key.rotated",
            "key.created",
            "key.rotated",
            "key.revoked",
        ]
    );
}
