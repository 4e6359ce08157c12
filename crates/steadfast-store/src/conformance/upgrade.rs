//! What both backends' upgrade tests check after opening a store an older
//! release wrote: everything it held is still there, through the new code.

use steadfast_core::{JobState, TenantName};

use crate::{JobQuery, Store, TenantScope, auth};

/// What the older release left, read with plain SQL before the upgrade.
#[derive(Debug)]
pub struct Written {
    /// (id, state) of every job, oldest first.
    pub jobs: Vec<(String, String)>,
    pub keys: i64,
    pub slos: i64,
}

/// Asserts that tenant `default` and everything `written` lists are carried
/// over (the fixture's running job with its checkpointed step), and returns
/// the tenant's scope for the caller's further checks.
pub async fn assert_carried_over(store: &impl Store, written: &Written) -> TenantScope {
    let tenant = store
        .tenant_by_name(&TenantName::new("default").expect("valid"))
        .await
        .expect("tenant lookup")
        .expect("the tenant is carried over");
    let scope = auth::local_operator(&tenant);
    let all = JobQuery {
        queue: None,
        state: None,
        limit: 100,
        after: None,
        ..JobQuery::default()
    };
    let page = store.list_jobs(&scope, all).await.expect("list jobs");
    let mut jobs: Vec<(String, String)> = page
        .jobs
        .iter()
        .map(|job| (job.id.to_string(), job.state.as_str().to_owned()))
        .collect();
    jobs.reverse();
    assert_eq!(jobs, written.jobs, "every job, in every state");
    let running = page
        .jobs
        .iter()
        .find(|job| job.state == JobState::Running)
        .expect("the fixture left a job running");
    let record = store.job(&scope, running.id).await.expect("get job").expect("the job");
    assert_eq!(record.steps.len(), 1, "the checkpointed step is carried over");
    assert_eq!(store.list_keys(&scope).await.expect("keys").len() as i64, written.keys);
    assert_eq!(store.list_slos(&scope).await.expect("slos").len() as i64, written.slos);
    scope
}
