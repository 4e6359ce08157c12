//! The dashboard's reads: queue summaries, what needs attention, dead
//! letters by kind, and the job list's filters.

use steadfast_core::lifecycle::Failure;
use steadfast_core::{AttemptError, AttemptOutcome, JobState, RetryPolicy, SignalName, StepName, WaitFor};

use super::*;
use crate::{JobQuery, RetryPlan, WorkflowLimits};

const TIME_LIMIT: Duration = Duration::from_secs(5);

/// Leases the next job of `queue` and fails it for good with `kind`.
pub(super) async fn kill(
    store: &impl Store,
    scope: &TenantScope,
    key: &KeyId,
    queue: &str,
    kind: &str,
    now: Timestamp,
) -> Job {
    let leased = lease_jobs(store, scope, lease_request(&[queue], 1, key), now)
        .await
        .remove(0);
    let failure = Failure {
        error: AttemptError {
            message: format!("{kind} happened"),
            kind: Some(kind.into()),
        },
        retryable: false,
        retry_after: None,
    };
    let plan = RetryPlan {
        policy: RetryPolicy::default(),
        jitter_seed: 1,
    };
    store
        .fail(scope, leased.id, &token(&leased), failure, plan, now)
        .await
        .unwrap()
        .job
}

pub async fn the_dashboard_reads_what_needs_attention(store: &impl Store) {
    let (scope, key) = new_tenant(store).await;
    let (other, other_key) = new_tenant(store).await;
    let limits = WorkflowLimits::default();
    for _ in 0..3 {
        enqueue_one(store, &scope, spec("mail"), t0()).await;
    }
    // One finishes, two die (one kind twice and one other), one waits for
    // a signal, one's worker vanishes mid-step.
    let done = lease_jobs(store, &scope, lease_request(&["mail"], 1, &key), at(1))
        .await
        .remove(0);
    store
        .complete(&scope, done.id, &token(&done), "1".into(), at(2))
        .await
        .unwrap();
    for kind in ["card_declined", "card_declined", "timeout"] {
        enqueue_one(store, &scope, spec("pay"), at(3)).await;
        kill(store, &scope, &key, "pay", kind, at(4)).await;
    }
    let approval = enqueue_one(store, &scope, spec("claims"), at(5)).await;
    let leased = lease_jobs(store, &scope, lease_request(&["claims"], 1, &key), at(6))
        .await
        .remove(0);
    let wait_for = WaitFor::Signal {
        name: SignalName::new("approval").unwrap(),
        deadline: None,
    };
    let step = StepName::new("approve").unwrap();
    store
        .wait(&scope, approval.id, &token(&leased), step, wait_for, limits, at(7))
        .await
        .unwrap();
    let vanished = enqueue_one(store, &scope, spec("claims"), at(8)).await;
    let leased = lease_jobs(store, &scope, lease_request(&["claims"], 1, &key), at(9))
        .await
        .remove(0);
    let charge = StepName::new("charge").unwrap();
    store
        .start_step(&scope, vanished.id, &token(&leased), charge, limits, at(10))
        .await
        .unwrap();
    let expiry = leased.lease.as_ref().unwrap().expires_at;
    store
        .expire_leases(expiry, RetryPolicy::default(), 1, 10)
        .await
        .unwrap();
    // Another tenant's dead job is never shown.
    enqueue_one(store, &other, spec("pay"), at(3)).await;
    kill(store, &other, &other_key, "pay", "theirs", at(4)).await;

    let summaries = store.queue_summaries(&scope, t0(), TIME_LIMIT).await.unwrap();
    let names: Vec<&str> = summaries.iter().map(|s| s.queue.as_str()).collect();
    assert_eq!(names, ["claims", "mail", "pay"]);
    let claims = &summaries[0];
    assert_eq!(
        (
            claims.unfinished(JobState::Waiting),
            claims.unfinished(JobState::Scheduled)
        ),
        (1, 1),
        "the approval waits; the vanished job backs off"
    );
    let mail = &summaries[1];
    assert_eq!(
        (mail.unfinished(JobState::Queued), mail.finished(JobState::Succeeded)),
        (2, 1)
    );
    assert_eq!(mail.oldest_queued, Some(t0()));
    assert_eq!(
        (
            summaries[2].finished(JobState::Dead),
            summaries[2].unfinished(JobState::Queued)
        ),
        (3, 0)
    );
    let later = store.queue_summaries(&scope, at(3), TIME_LIMIT).await.unwrap();
    assert_eq!(later[1].finished(JobState::Succeeded), 0, "finished before `since`");

    let attention = store.attention(&scope, t0(), 10, TIME_LIMIT).await.unwrap();
    assert_eq!(attention.dead.len(), 3);
    assert_eq!(
        attention.awaiting_signals.iter().map(|j| j.id).collect::<Vec<_>>(),
        [approval.id]
    );
    let uncertain = &attention.uncertain_steps;
    assert_eq!(uncertain.len(), 1);
    assert_eq!(
        (uncertain[0].job_id, uncertain[0].step.as_str(), uncertain[0].attempt),
        (vanished.id, "charge", 1)
    );
    assert_eq!(attention.lapsed.len(), 1);
    assert_eq!(
        (attention.lapsed[0].job_id, attention.lapsed[0].outcome),
        (vanished.id, AttemptOutcome::LeaseExpired)
    );
    let capped = store.attention(&scope, t0(), 1, TIME_LIMIT).await.unwrap();
    assert_eq!(capped.dead.len(), 1, "at most `limit` of each");

    let groups = store.dead_groups(&scope, TIME_LIMIT).await.unwrap();
    let groups: Vec<(Option<&str>, u64)> = groups.iter().map(|g| (g.kind.as_deref(), g.count)).collect();
    assert_eq!(groups, [(Some("card_declined"), 2), (Some("timeout"), 1)]);

    // The job list filters by error kind and creation time.
    let declined = JobQuery {
        error_kind: Some("card_declined".into()),
        limit: 10,
        ..JobQuery::default()
    };
    assert_eq!(store.list_jobs(&scope, declined).await.unwrap().jobs.len(), 2);
    let created = |after: Timestamp, before: Timestamp| JobQuery {
        created_after: Some(after),
        created_before: Some(before),
        limit: 50,
        ..JobQuery::default()
    };
    assert_eq!(
        store.list_jobs(&scope, created(at(3), at(4))).await.unwrap().jobs.len(),
        3
    );
    assert_eq!(
        store.list_jobs(&scope, created(t0(), at(3))).await.unwrap().jobs.len(),
        3
    );
}
