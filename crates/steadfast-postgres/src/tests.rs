//! The PostgreSQL store against the shared conformance suite, plus what only
//! PostgreSQL promises: the database alone isolates tenants, and the server
//! refuses roles that would bypass that.

use steadfast_store::conformance::*;
use steadfast_store::{JobQuery, JobStore, WorkflowStore};
use tokio_postgres::NoTls;

use crate::test_support::{TestDatabase, create_database, fresh_store};
use crate::{ConnectError, PostgresStore, SchemaError};

steadfast_store::conformance_suite!(fresh_store);

async fn connect_raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute("SET search_path TO steadfast").await.unwrap();
    client
}

/// Opens a transaction on a raw connection in `tenant`'s scope, as the store does.
async fn begin_as(client: &tokio_postgres::Client, tenant: uuid::Uuid) {
    client
        .batch_execute(&format!(
            "BEGIN; SELECT set_config('steadfast.tenant_id', '{tenant}', true)"
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_filter_off_the_database_alone_isolates_tenants() {
    let (store, _db) = fresh_store().await;
    let store = store.without_tenant_filter_for_tests();
    let (a, a_key) = new_tenant(&store).await;
    let (b, b_key) = new_tenant(&store).await;
    let job = enqueue_one(&store, &a, spec("shared"), t0()).await;
    let everything = JobQuery {
        queue: None,
        state: None,
        limit: 100,
        after: None,
        ..JobQuery::default()
    };

    // Non-vacuous: the same unfiltered queries do find the job within its tenant.
    assert!(store.job(&a, job.id).await.unwrap().is_some());
    assert_eq!(store.list_jobs(&a, everything.clone()).await.unwrap().jobs.len(), 1);

    assert_eq!(
        store.job(&b, job.id).await.unwrap(),
        None,
        "row-level security hides A's job from B"
    );
    assert!(store.list_jobs(&b, everything).await.unwrap().jobs.is_empty());
    assert!(
        lease_jobs(&store, &b, lease_request(&["shared"], 10, &b_key), t0())
            .await
            .is_empty()
    );
    assert_eq!(
        store.complete(&b, job.id, "lt_guess", "1".into(), at(1)).await,
        Err(steadfast_store::StoreError::NotFound)
    );
    let step = steadfast_store::StepOp {
        id: job.id,
        token: "lt_guess".into(),
        step: steadfast_core::StepName::new("s").unwrap(),
        action: steadfast_store::StepAction::Start,
    };
    assert_eq!(
        store
            .step_many(&b, vec![step], steadfast_store::WorkflowLimits::default(), at(1))
            .await,
        Ok(vec![Err(steadfast_store::StoreError::NotFound)])
    );
    assert!(store.job(&a, job.id).await.unwrap().unwrap().steps.is_empty());
    assert_eq!(
        lease_jobs(&store, &a, lease_request(&["shared"], 10, &a_key), t0())
            .await
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_role_cannot_reach_another_tenant_even_in_raw_sql() {
    let (store, db) = fresh_store().await;
    let (a, _) = new_tenant(&store).await;
    let (b, _) = new_tenant(&store).await;
    enqueue_one(&store, &a, spec("q"), t0()).await;
    let app = connect_raw(&db.app_url).await;
    let count = |sql: &'static str| {
        let app = &app;
        async move { app.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };

    assert_eq!(
        count("SELECT count(*) FROM jobs").await,
        0,
        "no tenant set: nothing visible"
    );
    begin_as(&app, b.tenant_id().0).await;
    assert_eq!(
        count("SELECT count(*) FROM jobs").await,
        0,
        "tenant B sees none of A's jobs"
    );
    let updated = app.execute("UPDATE jobs SET state = 'dead'", &[]).await.unwrap();
    assert_eq!(updated, 0, "tenant B cannot update A's jobs");
    let smuggled = app
        .execute(
            "INSERT INTO idempotency_keys (tenant_id, key, job_id, fingerprint, expires_at) VALUES ($1, 'k', $1, '', 0)",
            &[&a.tenant_id().0],
        )
        .await;
    assert!(smuggled.is_err(), "tenant B cannot write rows for tenant A");
    app.batch_execute("ROLLBACK").await.unwrap();
    // A's audit records waiting to be chained are as hidden as its jobs.
    begin_as(&app, b.tenant_id().0).await;
    let of_a = "SELECT count(*) FROM audit_intake WHERE tenant_id = $1";
    let waiting_of_a = || async { app.query_one(of_a, &[&a.tenant_id().0]).await.unwrap().get::<_, i64>(0) };
    assert_eq!(waiting_of_a().await, 0, "B sees none of A's waiting records");
    let deleted = app
        .execute("DELETE FROM audit_intake WHERE tenant_id = $1", &[&a.tenant_id().0])
        .await
        .unwrap();
    assert_eq!(deleted, 0, "B deletes none of them");
    let smuggled = app
        .execute(
            "INSERT INTO audit_intake (tenant_id, at, actor_kind, actor_name, action, target, summary) \
             VALUES ($1, 0, 'system', 'system', 'job.forged', 'x', '{}')",
            &[&a.tenant_id().0],
        )
        .await;
    assert!(smuggled.is_err(), "B cannot slip a record into A's chain");
    app.batch_execute("ROLLBACK").await.unwrap();
    // The lease's queue-head function runs as the caller: B cannot lock A's queue through it.
    let heads_of_a = "SELECT count(*) FROM steadfast_queue_heads($1, 'q', 10)";
    let locked_heads = || async {
        app.query_one(heads_of_a, &[&a.tenant_id().0])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    begin_as(&app, b.tenant_id().0).await;
    assert_eq!(
        locked_heads().await,
        0,
        "B reaches none of A's queue through the lease function"
    );
    app.batch_execute("ROLLBACK").await.unwrap();
    begin_as(&app, a.tenant_id().0).await;
    assert_eq!(locked_heads().await, 1, "non-vacuous: A leases its own job through it");
    assert!(waiting_of_a().await > 0, "non-vacuous: A's records are waiting there");
    assert_eq!(count("SELECT count(*) FROM jobs").await, 1, "tenant A sees its own job");
    app.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        count("SELECT count(*) FROM jobs").await,
        0,
        "the setting ended with the transaction"
    );
    let foreign_functions = app.query_one("SELECT count(*) FROM steadfast_tenants()", &[]).await;
    assert!(
        foreign_functions.is_ok(),
        "the narrow functions are the application's only way across tenants"
    );
    // The queue-head function stays what makes it safe and fast: the
    // caller's rights (row-level security applies) and no sorting (its plan
    // cannot depend on statistics).
    let function = app
        .query_one(
            "SELECT prosecdef, 'enable_sort=off' = ANY(proconfig) FROM pg_proc WHERE proname = 'steadfast_queue_heads'",
            &[],
        )
        .await
        .unwrap();
    assert!(
        !function.get::<_, bool>(0),
        "steadfast_queue_heads must not be SECURITY DEFINER"
    );
    assert!(
        function.get::<_, bool>(1),
        "steadfast_queue_heads must price sorting out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_the_owner_a_superuser_and_an_unmigrated_database() {
    let db: TestDatabase = create_database().await;
    let refused = |result: Result<PostgresStore, ConnectError>| match result {
        Err(ConnectError::Schema(SchemaError::PrivilegedRole { why, .. })) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(refused(PostgresStore::connect(&db.owner_url).await).contains("owner"));
    assert_eq!(refused(PostgresStore::connect(&db.admin_url).await), "a superuser");

    let admin = connect_raw(&db.admin_url).await;
    let empty = format!("{}_empty", db.name);
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {empty} OWNER {}",
            crate::test_support::OWNER_ROLE
        ))
        .await
        .unwrap();
    let unmigrated_url = db.app_url.replace(&format!("/{}", db.name), &format!("/{empty}"));
    match PostgresStore::connect(&unmigrated_url).await {
        Err(error @ ConnectError::Schema(SchemaError::NotMigrated)) => {
            assert!(
                error.to_string().contains("steadfast migrate --database-url"),
                "{error}"
            );
        }
        other => panic!("expected NotMigrated, got {other:?}"),
    }
}

mod tampering {
    use steadfast_core::audit::{Breach, Head};
    use steadfast_store::audit::{VerifyError, verify};
    use steadfast_store::conformance::*;
    use steadfast_store::{AuditStore, JobStore, Maintenance, TenantScope};

    use super::{begin_as, connect_raw};
    use crate::test_support::fresh_store;

    /// A chain of a few records, then `tamper` run as a superuser with
    /// triggers off (an attacker with full database access).
    async fn tampered(tamper: &str, checkpoint: bool) -> Result<(), Breach> {
        let (store, db) = fresh_store().await;
        let (scope, _): (TenantScope, _) = new_tenant(&store).await;
        for i in 0..6 {
            enqueue_one(&store, &scope, spec("q"), at(i)).await;
        }
        // The records are linked (the background chainer's pass) before the attack.
        assert_eq!(store.chain_audit(1000).await.unwrap(), 8);
        let kept: Option<Head> = if checkpoint {
            store.audit_head(&scope).await.unwrap()
        } else {
            None
        };
        let admin = connect_raw(&db.admin_url).await;
        let sql = format!(
            "SET session_replication_role = replica; {}",
            tamper.replace("{tenant}", &scope.tenant_id().to_string())
        );
        admin.batch_execute(&sql).await.unwrap();
        match verify(&store, &scope, kept.as_slice()).await {
            Ok(_) => Ok(()),
            Err(VerifyError::Breach(breach)) => Err(breach),
            Err(other) => panic!("{other}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_kind_of_tampering_is_caught_and_named() {
        assert_eq!(tampered("SELECT 1", true).await, Ok(()));
        let edit = "UPDATE audit_records SET summary = '{\"forged\":true}' WHERE tenant_id = '{tenant}' AND seq = 4";
        assert_eq!(tampered(edit, false).await, Err(Breach::Edited { seq: 4 }));
        let delete = "DELETE FROM audit_records WHERE tenant_id = '{tenant}' AND seq = 4";
        assert_eq!(tampered(delete, false).await, Err(Breach::Missing { from: 4, to: 4 }));
        let swap = "UPDATE audit_records SET seq = -1 WHERE tenant_id = '{tenant}' AND seq = 3; \
                    UPDATE audit_records SET seq = 3 WHERE tenant_id = '{tenant}' AND seq = 4; \
                    UPDATE audit_records SET seq = 4 WHERE tenant_id = '{tenant}' AND seq = -1;";
        assert_eq!(tampered(swap, false).await, Err(Breach::Reordered { seq: 3 }));
        let cut = "DELETE FROM audit_records WHERE tenant_id = '{tenant}' AND seq > 5; \
                   UPDATE audit_heads SET seq = 5, hash = (SELECT hash FROM audit_records \
                     WHERE tenant_id = '{tenant}' AND seq = 5) WHERE tenant_id = '{tenant}';";
        assert_eq!(
            tampered(cut, true).await,
            Err(Breach::Truncated {
                checkpoint_seq: 8,
                last_seq: 5
            })
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn neither_the_application_nor_the_owner_can_change_records() {
        let (store, db) = fresh_store().await;
        let (scope, _) = new_tenant(&store).await;
        // One record linked into the chain, one still waiting to be.
        store.chain_audit(1000).await.unwrap();
        enqueue_one(&store, &scope, spec("q"), at(1)).await;
        let app = connect_raw(&db.app_url).await;
        begin_as(&app, scope.tenant_id().0).await;
        let denied = app
            .batch_execute("UPDATE audit_records SET summary = '{}'")
            .await
            .unwrap_err();
        assert!(format!("{denied:?}").contains("permission denied"), "{denied:?}");
        app.batch_execute("ROLLBACK").await.unwrap();
        begin_as(&app, scope.tenant_id().0).await;
        let denied = app
            .batch_execute("UPDATE audit_intake SET summary = '{}'")
            .await
            .unwrap_err();
        assert!(format!("{denied:?}").contains("permission denied"), "{denied:?}");
        app.batch_execute("ROLLBACK").await.unwrap();
        let owner = connect_raw(&db.owner_url).await;
        let refused = owner.batch_execute("DELETE FROM audit_records").await.unwrap_err();
        assert!(
            format!("{refused:?}").contains("append-only"),
            "the owner cannot delete records either: {refused:?}"
        );
        let admin = connect_raw(&db.admin_url).await;
        let refused = admin
            .batch_execute("UPDATE audit_records SET summary = '{}'")
            .await
            .unwrap_err();
        assert!(
            format!("{refused:?}").contains("append-only"),
            "even a superuser needs to switch triggers off: {refused:?}"
        );
        let refused = admin
            .batch_execute("UPDATE audit_intake SET summary = '{}'")
            .await
            .unwrap_err();
        assert!(
            format!("{refused:?}").contains("not edited"),
            "a waiting record is not edited either: {refused:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_jobs_records_are_chained_in_the_order_of_its_transitions_across_nodes() {
        let (first, db) = fresh_store().await;
        let nodes = [
            first,
            crate::PostgresStore::connect(&db.app_url).await.unwrap(),
            crate::PostgresStore::connect(&db.app_url).await.unwrap(),
        ];
        let (scope, key) = new_tenant(&nodes[0]).await;
        // Chainers on every node race each other and the transitions.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let chainers: Vec<_> = nodes
            .iter()
            .map(|node| {
                let (node, done) = (node.clone(), done.clone());
                tokio::spawn(async move {
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        node.chain_audit(3).await.unwrap();
                    }
                })
            })
            .collect();
        let mut jobs = Vec::new();
        for i in 0..30 {
            // Enqueued on one node, leased on the next, completed on the third.
            let job = enqueue_one(&nodes[i % 3], &scope, spec("causal"), at(1)).await;
            let leased = lease_jobs(&nodes[(i + 1) % 3], &scope, lease_request(&["causal"], 1, &key), at(2)).await;
            assert_eq!(leased[0].id, job.id);
            let completing = steadfast_store::Completing {
                id: job.id,
                token: token(&leased[0]),
                output: "{}".into(),
            };
            let done = nodes[(i + 2) % 3]
                .complete_many(&scope, vec![completing], at(3))
                .await
                .unwrap();
            assert!(done[0].is_ok());
            jobs.push(job.id);
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        for chainer in chainers {
            chainer.await.unwrap();
        }
        for id in jobs {
            let query = steadfast_store::AuditQuery {
                job_id: Some(id),
                limit: 10,
                ..Default::default()
            };
            let records = nodes[0].audit_records(&scope, query).await.unwrap().records;
            let mut by_seq: Vec<_> = records.iter().map(|r| (r.seq, r.action.as_str())).collect();
            by_seq.sort();
            let actions: Vec<_> = by_seq.iter().map(|(_, action)| *action).collect();
            assert_eq!(actions, ["job.enqueued", "job.leased", "job.succeeded"], "job {id}");
        }
        verify(&nodes[1], &scope, &[]).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_committed_after_later_ones_were_chained_is_chained_once() {
        let (store, db) = fresh_store().await;
        let (scope, _) = new_tenant(&store).await;
        let before = verify(&store, &scope, &[]).await.unwrap().records;
        // A writer takes an intake id, then is slow to commit.
        let slow = connect_raw(&db.app_url).await;
        begin_as(&slow, scope.tenant_id().0).await;
        slow.execute(
            "INSERT INTO audit_intake (tenant_id, at, actor_kind, actor_name, action, target, summary) \
             VALUES ($1, 0, 'system', 'system', 'job.slow', 'x', '{}')",
            &[&scope.tenant_id().0],
        )
        .await
        .unwrap();
        // Meanwhile a later record is written and chained.
        enqueue_one(&store, &scope, spec("q"), at(1)).await;
        assert_eq!(store.chain_audit(100).await.unwrap(), 1);
        slow.batch_execute("COMMIT").await.unwrap();
        let verified = verify(&store, &scope, &[]).await.unwrap();
        assert_eq!(verified.records - before, 2, "both records, each once");
        let actions: Vec<String> = store
            .audit_records(
                &scope,
                steadfast_store::AuditQuery {
                    limit: 100,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.action)
            .collect();
        assert_eq!(actions.iter().filter(|a| *a == "job.slow").count(), 1);
        assert_eq!(store.chain_audit(100).await.unwrap(), 0, "nothing left waiting");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_on_several_nodes_make_one_unbroken_chain() {
        let (first, db) = fresh_store().await;
        let nodes = [
            first,
            crate::PostgresStore::connect(&db.app_url).await.unwrap(),
            crate::PostgresStore::connect(&db.app_url).await.unwrap(),
        ];
        let (scope, _) = new_tenant(&nodes[0]).await;
        let before = verify(&nodes[0], &scope, &[]).await.unwrap().records;
        let mut writers = Vec::new();
        for n in 0..12 {
            let node = nodes[n % nodes.len()].clone();
            let scope = scope.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..10 {
                    enqueue_one(&node, &scope, spec("race"), at(i)).await;
                }
            }));
        }
        // Every node's chainer links records while the writers write, and
        // the reads in between link their chain too: all race for the head.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let chainers: Vec<_> = nodes
            .iter()
            .map(|node| {
                let (node, done, scope) = (node.clone(), done.clone(), scope.clone());
                tokio::spawn(async move {
                    let mut linked = 0;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        linked += node.chain_audit(7).await.unwrap();
                        node.audit_head(&scope).await.unwrap();
                    }
                    linked
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        for chainer in chainers {
            chainer.await.unwrap();
        }
        let verified = verify(&nodes[1], &scope, &[]).await.unwrap();
        assert_eq!(
            verified.records - before,
            120,
            "every append is in the chain, once, in sequence"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_makes_jobs_ready_wakes_the_other_nodes_listeners() {
    use steadfast_store::Maintenance;

    let (first, db) = fresh_store().await;
    let second = PostgresStore::connect(&db.app_url).await.unwrap();
    let (scope, _) = new_tenant(&first).await;
    let (woken, mut wakes) = tokio::sync::mpsc::unbounded_channel();
    second.subscribe_ready(std::sync::Arc::new(move |tenant, queue| {
        let _ = woken.send((tenant, queue.as_str().to_owned()));
    }));
    // The listener connects in the background: enqueue until it hears one,
    // each enqueue announced after its commit, from the first node.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let heard = loop {
        enqueue_one(&first, &scope, spec("wake-me"), t0()).await;
        match tokio::time::timeout(std::time::Duration::from_millis(200), wakes.recv()).await {
            Ok(Some(heard)) => break heard,
            Ok(None) => panic!("the listener is gone"),
            Err(_) if tokio::time::Instant::now() < deadline => continue,
            Err(_) => panic!("no node heard that jobs became ready"),
        }
    };
    assert_eq!(heard, (scope.tenant_id(), "wake-me".to_owned()));
}

/// Enqueues to queue `probe` on `from` until `wakes` hears of it.
async fn until_heard(
    from: &PostgresStore,
    scope: &steadfast_store::TenantScope,
    probe: &str,
    wakes: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    deadline: tokio::time::Instant,
) {
    loop {
        enqueue_one(from, scope, spec(probe), t0()).await;
        let poll = tokio::time::Instant::now() + std::time::Duration::from_millis(200);
        while let Ok(Some(queue)) = tokio::time::timeout_at(poll, wakes.recv()).await {
            if queue == probe {
                return;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "a listener never connected");
    }
}

/// A node hears of its own commits at once, from the committing
/// transaction, and not a second time when its announcement comes back
/// through `LISTEN` (that echo used to wake every waiter for a second,
/// empty lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_hears_its_own_commits_once_and_at_commit() {
    use steadfast_store::Maintenance;

    let (this, db) = fresh_store().await;
    let other = PostgresStore::connect(&db.app_url).await.unwrap();
    let (scope, _) = new_tenant(&this).await;
    let subscribe = |store: &PostgresStore| {
        let (woken, wakes) = tokio::sync::mpsc::unbounded_channel();
        store.subscribe_ready(std::sync::Arc::new(move |_, queue| {
            let _ = woken.send(queue.as_str().to_owned());
        }));
        wakes
    };
    let (mut wakes, mut other_wakes) = (subscribe(&this), subscribe(&other));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    // Both listeners connect in the background: probe until each has heard
    // the other node (an echo could not arrive before that either).
    until_heard(&other, &scope, "probe-1", &mut wakes, deadline).await;
    until_heard(&this, &scope, "probe-2", &mut other_wakes, deadline).await;
    let probe = |queue: &String| queue.starts_with("probe");

    enqueue_one(&this, &scope, spec("mine"), t0()).await;
    let at_commit: Vec<String> = std::iter::from_fn(|| wakes.try_recv().ok())
        .filter(|q| !probe(q))
        .collect();
    assert_eq!(at_commit, ["mine"], "heard at commit, before enqueue returned");
    // Once the other node has heard ours, a commit it makes after that is
    // announced after ours; every listener gets notifications in that order,
    // so an echo of ours would reach this node before the other's.
    loop {
        let next = tokio::time::timeout_at(deadline, other_wakes.recv()).await;
        if next.expect("the other node heard ours in time").as_deref() == Some("mine") {
            break;
        }
    }
    enqueue_one(&other, &scope, spec("after"), t0()).await;
    let mut heard = Vec::new();
    while heard.last().map(String::as_str) != Some("after") {
        let next = tokio::time::timeout_at(deadline, wakes.recv()).await;
        let queue = next
            .expect("heard the later commit in time")
            .expect("the callback is alive");
        // A probe announced while the listeners connected may still arrive.
        if !probe(&queue) {
            heard.push(queue);
        }
    }
    assert_eq!(heard, ["after"], "this node's own commit came back through LISTEN");
}

/// The pool's size and the statement timeout are the operator's to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_options_set_the_pool_size_and_the_statement_timeout() {
    use crate::{Durability, PoolOptions, pg_error};

    let database = create_database().await;
    let options = PoolOptions {
        pool_size: 3,
        statement_timeout: std::time::Duration::from_millis(150),
        ..PoolOptions::default()
    };
    let store = PostgresStore::connect_with(&database.app_url, options).await.unwrap();
    assert_eq!(store.pool.status().max_size, 3);
    let slow = store
        .transaction(None, Durability::Durable, async |tx| {
            tx.batch_execute("SELECT pg_sleep(2)").await.map_err(pg_error)
        })
        .await;
    let cancelled = tokio_postgres::error::SqlState::QUERY_CANCELED.code();
    assert!(
        matches!(&slow, Err(steadfast_store::StoreError::Unavailable(detail)) if detail.starts_with(cancelled)),
        "{slow:?}"
    );
}

/// A request cancelled mid-transaction drops its transaction: the row
/// locks it took must go at once, not when the server's idle timeout
/// (10 s) ends the session, and the connection must not go back to the
/// pool inside the transaction. (The store's own `Transaction` closes its
/// connection when dropped before it ends.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dropped_before_it_ends_releases_its_locks_at_once() {
    use crate::{Durability, pg_error};

    let (store, db) = fresh_store().await;
    let (scope, _) = new_tenant(&store).await;
    let job = enqueue_one(&store, &scope, spec("held"), t0()).await;
    let (locked, is_locked) = tokio::sync::oneshot::channel();
    let holder = tokio::spawn({
        let store = store.clone();
        let tenant = scope.tenant_id();
        async move {
            store
                .transaction(Some(tenant), Durability::Durable, async |tx| {
                    tx.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", &[&job.id.0])
                        .await
                        .map_err(pg_error)?;
                    let _ = locked.send(());
                    std::future::pending::<Result<(), steadfast_store::StoreError>>().await
                })
                .await
        }
    });
    is_locked.await.expect("the holder took the lock");
    holder.abort();
    assert!(holder.await.unwrap_err().is_cancelled());

    // The server notices the closed connection within moments; poll for
    // the lock without waiting on it, well inside the idle timeout.
    let raw = connect_raw(&db.app_url).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        begin_as(&raw, scope.tenant_id().0).await;
        let taken = raw
            .execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE NOWAIT", &[&job.id.0])
            .await;
        raw.batch_execute("ROLLBACK").await.unwrap();
        match taken {
            Ok(rows) => {
                assert_eq!(rows, 1);
                break;
            }
            Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the dropped transaction still holds its lock"
                );
                tokio::task::yield_now().await;
            }
            Err(error) => panic!("{error}"),
        }
    }
    // No connection of the application role is left inside a transaction.
    let idle_in_transaction = raw
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = current_user AND state LIKE 'idle in transaction%'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(idle_in_transaction, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planner_statistics_are_refreshed_once_a_table_changed_much() {
    use steadfast_store::Maintenance;

    let (store, db) = fresh_store().await;
    let (scope, _) = new_tenant(&store).await;
    let admin = connect_raw(&db.admin_url).await;
    let jobs_analysed = async || -> bool {
        admin
            .query_one(
                "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'jobs'",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    };
    // Autovacuum must not analyse the table first (it would reset the
    // count of changes this test relies on).
    admin
        .batch_execute("ALTER TABLE steadfast.jobs SET (autovacuum_enabled = off)")
        .await
        .unwrap();
    assert_eq!(store.refresh_statistics().await.unwrap(), 0, "nothing changed yet");
    assert!(!jobs_analysed().await);

    let batch = (0..600).map(|_| new_job(spec("q"))).collect();
    store
        .enqueue(&scope, batch, steadfast_core::Limits::default().dedup_window, t0())
        .await
        .unwrap();
    // Backends report their changes to the statistics views at the end of
    // a transaction, at most once a second: poll with a deadline.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !jobs_analysed().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the jobs table was never analysed"
        );
        store.refresh_statistics().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let planned_from: f32 = admin
        .query_one(
            "SELECT reltuples FROM pg_class WHERE oid = 'steadfast.jobs'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(planned_from, 600.0, "the planner now knows the table's size");
}

/// A database written by the release with schema 2 upgrades in place with
/// `steadfast migrate`: every job, key, SLO and audit record is carried over
/// (records still waiting in the intake too), the new schema's lease works
/// on the old jobs, and the chain verifies across the upgrade.
/// `tests/fixtures/schema2.sql` was made by that release's binary with
/// `tests/fixtures/make_schema2_database.py`.
mod upgrade {
    use steadfast_store::audit::verify;
    use steadfast_store::conformance::*;
    use steadfast_store::{JobStore, KeyStore};

    use super::connect_raw;
    use crate::schema::{self, SchemaError};
    use crate::test_support::{APP_ROLE, create_unmigrated_database};
    use crate::{ConnectError, PostgresStore};

    const FIXTURE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema2.sql"));

    fn later(seconds: u64) -> steadfast_core::Timestamp {
        steadfast_core::Timestamp::now()
            .saturating_add(std::time::Duration::from_secs(seconds))
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_schema_2_database_upgrades_in_place_and_its_chain_verifies_across_the_upgrade() {
        let db = create_unmigrated_database().await;
        // Restored on a connection of its own: the dump's session settings
        // (row security off, no search path) must not leak into the migration.
        connect_raw(&db.owner_url)
            .await
            .batch_execute(FIXTURE)
            .await
            .expect("the fixture restores");

        // What the old release wrote, read as the superuser (no row-level security).
        let admin = connect_raw(&db.admin_url).await;
        let jobs_before: Vec<(String, String)> = admin
            .query("SELECT id::text, state FROM steadfast.jobs ORDER BY seq", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let count = async |table: &str| -> i64 {
            let sql = format!("SELECT count(*) FROM steadfast.{table}");
            admin.query_one(&sql, &[]).await.unwrap().get(0)
        };
        let waiting = count("audit_intake").await;
        assert!(waiting > 0, "the fixture has records waiting to be chained");
        let records = count("audit_records").await + waiting;
        let written = Written {
            jobs: jobs_before,
            keys: count("api_keys").await,
            slos: count("slos").await,
        };
        assert!(written.jobs.len() == 5 && records > 10, "a fixture worth upgrading");

        // This build refuses the old schema until it is migrated.
        match PostgresStore::connect(&db.app_url).await {
            Err(ConnectError::Schema(SchemaError::Outdated { found: 2 })) => {}
            other => panic!("expected the schema-2 database to be refused, got {other:?}"),
        }
        let mut owner = connect_raw(&db.owner_url).await;
        let migrated = schema::migrate(&mut owner, APP_ROLE).await.unwrap();
        assert_eq!((migrated.from, migrated.to), (2, schema::CURRENT_VERSION));

        let store = PostgresStore::connect(&db.app_url).await.unwrap();
        let scope = assert_carried_over(&store, &written).await;

        // The old chain, waiting records included, verifies.
        let verified = verify(&store, &scope, &[]).await.unwrap();
        assert_eq!(verified.records as i64, records);
        let old_head = verified.head.unwrap();

        // The queued job left by the old release is leased through the new
        // schema's function and completed; new records chain on.
        let key = store.list_keys(&scope).await.unwrap().remove(0).key_id;
        let leased = lease_jobs(&store, &scope, lease_request(&["emails"], 10, &key), later(1)).await;
        let queued: Vec<&(String, String)> = written.jobs.iter().filter(|(_, state)| state == "queued").collect();
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].id.to_string(), queued[0].0);
        store
            .complete(&scope, leased[0].id, &token(&leased[0]), "{}".into(), later(2))
            .await
            .unwrap();
        enqueue_one(&store, &scope, spec("after-upgrade"), later(3)).await;
        let verified = verify(&store, &scope, &[old_head]).await.unwrap();
        assert_eq!(verified.records as i64, records + 3, "leased, succeeded, enqueued");
    }
}

/// Every table that holds a tenant's rows has row-level security enabled,
/// forced (the owner obeys it too) and a policy: a table added without
/// them fails here, whatever the store's own filters do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_table_is_under_row_level_security() {
    let (_store, db) = fresh_store().await;
    let client = connect_raw(&db.owner_url).await;
    let tables = client
        .query(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, \
                    EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'steadfast' AND c.relkind = 'r' \
               AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' \
                           AND NOT a.attisdropped) \
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let names: Vec<String> = tables.iter().map(|row| row.get(0)).collect();
    assert!(
        names.contains(&"jobs".to_owned()) && names.contains(&"bulk_operations".to_owned()),
        "{names:?}"
    );
    let unprotected: Vec<String> = tables
        .iter()
        .filter(|row| !(row.get::<_, bool>(1) && row.get::<_, bool>(2) && row.get::<_, bool>(3)))
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        unprotected,
        Vec::<String>::new(),
        "tables with tenant rows but no forced policy"
    );
}
