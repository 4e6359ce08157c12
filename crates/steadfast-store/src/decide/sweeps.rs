//! Decisions of the background duties, across tenants. Each change is
//! recorded in its job's tenant's chain, by the system.

use steadfast_core::lifecycle;
use steadfast_core::retry::jitter_sample;
use steadfast_core::{Job, RetryPolicy, Timestamp};

use super::{Decision, Writes};
use crate::Swept;
use crate::audit::drafts;

/// Scheduled jobs whose time came become `queued`; waits whose deadline
/// came end (a sleep completes, a signal wait times out) and their jobs are
/// queued. `scheduled` and `waiting` are the due jobs found, at most `limit`
/// of each: a full load means more may be due. A job another transition got
/// to first is passed over.
pub fn fire_timers(scheduled: Vec<Job>, waiting: Vec<Job>, limit: usize, now: Timestamp) -> Decision<Swept> {
    let more = scheduled.len() >= limit || waiting.len() >= limit;
    let mut writes = Writes::default();
    for before in scheduled {
        let Ok(job) = lifecycle::promote(&before, now) else {
            continue;
        };
        writes.audit(job.tenant_id, drafts::job_queued(&before, &job));
        writes.changed_jobs.push(job);
    }
    for before in waiting {
        let Ok((job, step)) = lifecycle::fire_wait_timer(&before, now) else {
            continue;
        };
        writes.step(&job, &step);
        writes.audit(job.tenant_id, drafts::job_woken(&before, &job, &step));
        writes.changed_jobs.push(job);
    }
    let swept = Swept {
        count: writes.changed_jobs.len(),
        ready_queues: writes.ready_queues(),
        more,
        ended: Vec::new(),
    };
    Decision { answer: swept, writes }
}

/// Attempts whose lease lapsed (or whose deadline passed) end, and their
/// jobs go through the retry policy. `due` holds at most `limit` jobs.
pub fn expire_leases(
    due: Vec<Job>,
    policy: &RetryPolicy,
    jitter_seed: u64,
    limit: usize,
    now: Timestamp,
) -> Decision<Swept> {
    let more = due.len() >= limit;
    let mut writes = Writes::default();
    let mut ended = Vec::new();
    for before in due {
        let sample = jitter_sample(jitter_seed, before.id.0.as_bytes());
        let Ok(transition) = lifecycle::expire(&before, policy, sample, now) else {
            continue;
        };
        let job = transition.job;
        writes.transition(&job, transition.ended_attempt.as_ref());
        if let Some(attempt) = transition.ended_attempt {
            writes.audit(job.tenant_id, drafts::job_expired(&before, &job, attempt.outcome));
            ended.push((job, attempt));
        }
    }
    let swept = Swept {
        count: writes.changed_jobs.len(),
        ready_queues: writes.ready_queues(),
        more,
        ended,
    };
    Decision { answer: swept, writes }
}
