//! The audit log's storage contract, and the drafts every backend appends,
//! in the same transaction as the change each one describes.

use async_trait::async_trait;
use serde_json::{Value, json};
use steadfast_core::audit::{Draft, Head, Record};
use steadfast_core::lifecycle::StepResolution;
use steadfast_core::{Job, JobId, KeyId, Reason, Step, Timestamp};

use crate::decide::{KeyChange, SigningKeyRecord};

/// Failed authentications gathered over an interval: one audit record,
/// however many requests failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailures {
    /// The key presented, when it exists (a wrong secret, or a revoked or
    /// expired key); `None` gathers every unknown or malformed key, whose
    /// ids are chosen by whoever sends them.
    pub key_id: Option<KeyId>,
    pub count: u64,
    pub first_at: Timestamp,
    pub last_at: Timestamp,
    /// The busiest client addresses and their counts, busiest first.
    pub addresses: Vec<(String, u64)>,
    /// Failures from addresses beyond those listed.
    pub other_addresses: u64,
}

/// The chain of the records no tenant owns: failed authentications with
/// unknown key ids, the deployment's audit signing keys.
pub const SYSTEM_CHAIN: steadfast_core::TenantId = steadfast_core::TenantId(uuid::Uuid::nil());
use crate::{StoreError, TenantScope};

/// A filter over one tenant's audit records, oldest first (by time, then sequence).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub since: Option<Timestamp>,
    /// Exclusive.
    pub until: Option<Timestamp>,
    /// A key id, or `system` or `operator`.
    pub actor: Option<String>,
    pub action: Option<String>,
    pub job_id: Option<JobId>,
    pub limit: u32,
    /// Continue after this position (the previous page's `next`).
    pub after: Option<AuditCursor>,
}

/// A position in an audit listing, which runs in (time, sequence) order:
/// keyset paging reads each page straight from the time index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor {
    pub at: Timestamp,
    pub seq: u64,
}

#[derive(Debug, Clone)]
pub struct AuditPage {
    pub records: Vec<Record>,
    /// Present when more records may follow: pass as `after`.
    pub next: Option<AuditCursor>,
}

impl AuditPage {
    /// A page from records fetched in (time, sequence) order with one more
    /// than `limit`: that extra record only says another page follows.
    pub fn from_rows(mut records: Vec<Record>, limit: u32) -> AuditPage {
        let more = records.len() > limit as usize;
        records.truncate(limit as usize);
        let next = records
            .last()
            .filter(|_| more)
            .map(|r| AuditCursor { at: r.at, seq: r.seq });
        AuditPage { records, next }
    }
}

/// Which column an actor filter compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorFilter<'a> {
    /// `system` or `operator`: the actor's kind.
    Kind(&'a str),
    /// Anything else is a key id.
    KeyId(&'a str),
}

impl AuditQuery {
    /// The one lower bound on time: the later of the window's start and the
    /// cursor's, so the index range starts where the page does.
    pub fn from(&self) -> Option<Timestamp> {
        match (self.since, self.after) {
            (Some(since), Some(after)) => Some(since.max(after.at)),
            (since, after) => since.or(after.map(|a| a.at)),
        }
    }

    pub fn actor_filter(&self) -> Option<ActorFilter<'_>> {
        self.actor.as_deref().map(|actor| match actor {
            "system" | "operator" | "source" => ActorFilter::Kind(actor),
            key_id => ActorFilter::KeyId(key_id),
        })
    }
}

#[async_trait]
pub trait AuditStore {
    async fn audit_records(&self, scope: &TenantScope, query: AuditQuery) -> Result<AuditPage, StoreError>;

    /// Up to `limit` records after sequence number `after`, in order: for verification and export.
    async fn audit_scan(&self, scope: &TenantScope, after: u64, limit: u32) -> Result<Vec<Record>, StoreError>;

    /// The chain's last record.
    async fn audit_head(&self, scope: &TenantScope) -> Result<Option<Head>, StoreError>;

    /// Checks what the chain's hashes do not cover but queries rely on (an
    /// index of records by job, the ranges rows are found by), after the
    /// chain itself verified. `Corrupt` names what is wrong.
    async fn check_audit_storage(&self, scope: &TenantScope) -> Result<(), StoreError>;

    /// The last record of a pruned prefix: where the remaining chain starts.
    async fn audit_base(&self, scope: &TenantScope) -> Result<Option<Head>, StoreError>;

    /// Records failed authentications gathered over an interval, as one
    /// record: in the key's tenant when the key exists, otherwise (unknown
    /// keys) in the system chain.
    async fn record_auth_failures(&self, failures: &AuthFailures, now: Timestamp) -> Result<(), StoreError>;

    /// The audit signing keys registered, oldest first; the last is current.
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError>;

    /// Presents `public_key` as [`crate::decide::register_signing_key`] rules, one
    /// registration at a time across nodes; the new registration (audited
    /// in the system chain), if any.
    async fn register_signing_key(
        &self,
        public_key: &str,
        change: KeyChange,
        now: Timestamp,
    ) -> Result<Option<SigningKeyRecord>, StoreError>;

    /// Retention: removes records older than `before` from every chain,
    /// keeping each remaining chain verifiable from a stored base, and
    /// records the pruning in the chain itself. Returns the records removed.
    async fn prune_audit(&self, before: Timestamp, limit: u32, now: Timestamp) -> Result<usize, StoreError>;
}

fn summary(value: Value) -> String {
    value.to_string()
}

/// JSON text stored by Steadfast (payloads, outputs) as a value; it was
/// validated on the way in.
fn stored_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// `details` with the operator's `reason`, when one was given.
fn with_reason(mut details: Value, reason: Option<&Reason>) -> Value {
    if let (Value::Object(map), Some(reason)) = (&mut details, reason) {
        map.insert("reason".into(), reason.as_str().into());
    }
    details
}

fn job_draft(action: &'static str, job: &Job, details: Value) -> Draft {
    job_summary(action, job, &details)
}

/// A job's draft with `details` serialised straight to text: the drafts
/// every job's life writes (enqueued, leased, succeeded, failed) are built
/// in the storage writer, where a JSON value tree per record cost more than
/// the record's insert.
fn job_summary(action: &'static str, job: &Job, details: &impl serde::Serialize) -> Draft {
    Draft {
        action,
        target: job.id.to_string(),
        job_id: Some(job.id),
        summary: serde_json::to_string(details).expect("a summary serialises"),
    }
}

/// Stored JSON text (an output) embedded as it is; it was validated on the
/// way in, and anything else reads as `null`.
fn raw_json(text: Option<&str>) -> Option<&serde_json::value::RawValue> {
    text.and_then(|text| serde_json::from_str(text).ok())
}

/// The summaries of the hot drafts. Fields are in alphabetical order, as a
/// JSON value tree writes them.
mod shapes {
    use serde::Serialize;
    use serde_json::value::RawValue;

    #[derive(Serialize)]
    pub struct Parent<'a> {
        pub job_id: String,
        pub step: &'a str,
    }

    #[derive(Serialize)]
    pub struct Enqueued<'a> {
        pub idempotency_key: Option<&'a str>,
        pub max_attempts: u32,
        pub parent: Option<Parent<'a>>,
        pub priority: i32,
        pub queue: &'a str,
        pub run_at: String,
        pub state: &'a str,
    }

    #[derive(Serialize)]
    pub struct Leased<'a> {
        pub attempt: u32,
        pub from: &'a str,
        pub lease_expires_at: Option<String>,
        pub to: &'a str,
        pub worker_id: Option<&'a str>,
    }

    #[derive(Serialize)]
    pub struct Succeeded<'a> {
        pub attempt: u32,
        pub from: &'a str,
        pub output: Option<&'a RawValue>,
        pub to: &'a str,
    }

    #[derive(Serialize)]
    pub struct Failed<'a> {
        pub attempt: u32,
        pub error: Option<&'a str>,
        pub from: &'a str,
        pub kind: Option<&'a str>,
        pub next_run_at: Option<String>,
        pub to: &'a str,
    }
}

/// Drafts for every audited change. Names are stable; see docs/audit.md.
pub mod drafts {
    use super::*;

    pub fn job_enqueued(job: &Job) -> Draft {
        let summary = shapes::Enqueued {
            idempotency_key: job.idempotency_key.as_ref().map(|k| k.as_str()),
            max_attempts: job.max_attempts,
            parent: job.parent.as_ref().map(|p| shapes::Parent {
                job_id: p.job_id.to_string(),
                step: p.step.as_str(),
            }),
            priority: job.priority,
            queue: job.queue.as_str(),
            run_at: job.run_at.to_string(),
            state: job.state.as_str(),
        };
        job_summary("job.enqueued", job, &summary)
    }

    /// A state change of `before` into `after`, with action-specific details.
    pub fn transition(action: &'static str, before: &Job, after: &Job, mut details: Value) -> Draft {
        if let Value::Object(map) = &mut details {
            map.insert("from".into(), before.state.as_str().into());
            map.insert("to".into(), after.state.as_str().into());
            map.insert("attempt".into(), after.attempt.into());
        }
        job_draft(action, after, details)
    }

    pub fn job_leased(before: &Job, after: &Job) -> Draft {
        let lease = after.lease.as_ref();
        let summary = shapes::Leased {
            attempt: after.attempt,
            from: before.state.as_str(),
            lease_expires_at: lease.map(|l| l.expires_at.to_string()),
            to: after.state.as_str(),
            worker_id: lease.map(|l| l.worker_id.as_str()),
        };
        job_summary("job.leased", after, &summary)
    }

    pub fn job_succeeded(before: &Job, after: &Job) -> Draft {
        let summary = shapes::Succeeded {
            attempt: after.attempt,
            from: before.state.as_str(),
            output: raw_json(after.output.as_deref()),
            to: after.state.as_str(),
        };
        job_summary("job.succeeded", after, &summary)
    }

    pub fn job_failed(action: &'static str, before: &Job, after: &Job) -> Draft {
        let error = after.last_error.as_ref();
        let summary = shapes::Failed {
            attempt: after.attempt,
            error: error.map(|e| e.message.as_str()),
            from: before.state.as_str(),
            kind: error.and_then(|e| e.kind.as_deref()),
            next_run_at: (after.state != steadfast_core::JobState::Dead).then(|| after.run_at.to_string()),
            to: after.state.as_str(),
        };
        job_summary(action, after, &summary)
    }

    /// A singleton enqueue gave the key's waiting job a new payload.
    pub fn job_payload_replaced(before: &Job, after: &Job) -> Draft {
        transition(
            "job.payload_replaced",
            before,
            after,
            json!({ "payload": stored_json(&after.payload) }),
        )
    }

    /// A worker handed the job back unfinished (it was shutting down).
    pub fn job_released(before: &Job, after: &Job) -> Draft {
        transition("job.released", before, after, json!({}))
    }

    pub fn job_retried(before: &Job, after: &Job, reason: Option<&Reason>) -> Draft {
        transition("job.retried", before, after, with_reason(json!({}), reason))
    }

    pub fn job_cancelled(before: &Job, after: &Job, reason: Option<&Reason>) -> Draft {
        transition("job.cancelled", before, after, with_reason(json!({}), reason))
    }

    /// A bulk operation started, completed or was cancelled.
    pub fn bulk_changed(action: &'static str, operation: &crate::bulk::BulkOperation) -> Draft {
        Draft {
            action,
            target: operation.id.to_string(),
            job_id: None,
            summary: summary(json!({
                "action": operation.spec.action.as_str(),
                "filter": operation.spec.filter,
                "reason": operation.spec.reason,
                "matched": operation.matched,
                "done": operation.done,
                "failed": operation.failed,
            })),
        }
    }

    /// An operator settled an uncertain step; `after` is the job after it
    /// (changed only when the resolution failed it).
    pub fn step_resolved(
        before: &Job,
        after: &Job,
        step: &Step,
        resolution: &StepResolution,
        reason: &Reason,
    ) -> Draft {
        let output = match resolution {
            StepResolution::Succeeded { output } => Some(stored_json(output)),
            _ => None,
        };
        transition(
            "step.resolved",
            before,
            after,
            json!({
                "step": step.name.as_str(),
                "started_by_attempt": step.attempt,
                "outcome": resolution.as_str(),
                "output": output,
                "reason": reason.as_str(),
            }),
        )
    }

    /// An operator replayed `original` as the new job `replay` (whose own
    /// `job.enqueued` record follows).
    pub fn job_replayed(original: &Job, replay: &Job, reason: &Reason) -> Draft {
        job_draft(
            "job.replayed",
            original,
            json!({
                "replay": replay.id.to_string(),
                "payload_changed": replay.payload != original.payload,
                "reason": reason.as_str(),
            }),
        )
    }

    /// A scheduled job's time came.
    pub fn job_queued(before: &Job, after: &Job) -> Draft {
        transition("job.queued", before, after, json!({}))
    }

    /// An expired lease (`job.lease_expired`) or attempt deadline (`job.timed_out`).
    pub fn job_expired(before: &Job, after: &Job, outcome: steadfast_core::AttemptOutcome) -> Draft {
        let action = match outcome {
            steadfast_core::AttemptOutcome::TimedOut => "job.timed_out",
            _ => "job.lease_expired",
        };
        job_failed(action, before, after)
    }

    pub fn job_waiting(before: &Job, after: &Job) -> Draft {
        let wait = after.wait.as_ref();
        let signal = wait.and_then(|w| match &w.wait_for {
            steadfast_core::WaitFor::Signal { name, .. } => Some(name.as_str()),
            steadfast_core::WaitFor::Until(_) => None,
        });
        transition(
            "job.waiting",
            before,
            after,
            json!({
                "step": wait.map(|w| w.step.as_str()),
                "signal": signal,
                "until": wait.and_then(|w| w.deadline()).map(|at| at.to_string()),
            }),
        )
    }

    /// A wait ended by its timer (a sleep's end or a signal wait's timeout).
    pub fn job_woken(before: &Job, after: &Job, step: &Step) -> Draft {
        let output = step.output.as_deref().map(stored_json);
        transition(
            "job.woken",
            before,
            after,
            json!({ "step": step.name.as_str(), "output": output }),
        )
    }

    pub fn step_started(job: &Job, step: &Step) -> Draft {
        job_draft(
            "step.started",
            job,
            json!({ "step": step.name.as_str(), "attempt": step.attempt }),
        )
    }

    pub fn step_completed(job: &Job, step: &Step) -> Draft {
        let output = step.output.as_deref().map(stored_json);
        job_draft(
            "step.completed",
            job,
            json!({ "step": step.name.as_str(), "attempt": step.attempt, "output": output }),
        )
    }

    pub fn signal_received(job: &Job, name: &str, payload: &str, woke: bool, reason: Option<&Reason>) -> Draft {
        job_draft(
            "signal.received",
            job,
            with_reason(
                json!({ "signal": name, "payload": stored_json(payload), "woke": woke }),
                reason,
            ),
        )
    }

    pub fn child_spawned(parent: &Job, child: &Job) -> Draft {
        let step = child.parent.as_ref().map(|p| p.step.as_str());
        job_draft(
            "child.spawned",
            parent,
            json!({ "child": child.id.to_string(), "step": step, "queue": child.queue.as_str() }),
        )
    }

    pub fn tenant_created(name: &str) -> Draft {
        Draft {
            action: "tenant.created",
            target: name.to_owned(),
            job_id: None,
            summary: summary(json!({ "name": name })),
        }
    }

    pub fn key_created(key_id: &KeyId, role: &str, name: &str) -> Draft {
        key_created_with(key_id, role, name, None, None)
    }

    /// A key's creation, with its expiry and the key it replaces, if any.
    pub fn key_created_with(
        key_id: &KeyId,
        role: &str,
        name: &str,
        expires_at: Option<Timestamp>,
        replaces: Option<&KeyId>,
    ) -> Draft {
        let mut details = json!({ "role": role, "name": name });
        if let Some(expires_at) = expires_at {
            details["expires_at"] = json!(expires_at.to_string());
        }
        if let Some(replaces) = replaces {
            details["replaces"] = json!(replaces.to_string());
        }
        Draft {
            action: "key.created",
            target: key_id.to_string(),
            job_id: None,
            summary: summary(details),
        }
    }

    pub fn jobs_pruned(queue: &steadfast_core::QueueName, removed: usize, cutoffs: crate::PruneCutoffs) -> Draft {
        Draft {
            action: "jobs.pruned",
            target: queue.to_string(),
            job_id: None,
            summary: summary(json!({
                "queue": queue.as_str(),
                "removed": removed,
                "succeeded_before": cutoffs.succeeded_before.to_string(),
                "failed_before": cutoffs.failed_before.to_string(),
            })),
        }
    }

    pub fn tenant_limits_set(limits: crate::TenantLimits) -> Draft {
        Draft {
            action: "tenant.limits_set",
            target: "tenant".into(),
            job_id: None,
            summary: summary(json!({
                "key_rate_limit": limits.key_rate.map(|(rate, _)| rate),
                "key_rate_burst": limits.key_rate.map(|(_, burst)| burst),
                "max_unfinished_jobs": limits.max_unfinished_jobs,
            })),
        }
    }

    pub fn queue_retention_set(queue: &steadfast_core::QueueName, retention: crate::QueueRetention) -> Draft {
        Draft {
            action: "queue.retention_set",
            target: queue.to_string(),
            job_id: None,
            summary: summary(json!({
                "queue": queue.as_str(),
                "retain_succeeded_secs": retention.succeeded.map(|kept| kept.as_secs()),
                "retain_failed_secs": retention.failed.map(|kept| kept.as_secs()),
            })),
        }
    }

    /// A queue's flow policy changed: both versions, as stored.
    pub fn queue_policy_set(
        queue: &steadfast_core::QueueName,
        before: &crate::QueuePolicy,
        after: &crate::QueuePolicy,
    ) -> Draft {
        Draft {
            action: "queue.policy_set",
            target: queue.to_string(),
            job_id: None,
            summary: summary(json!({
                "queue": queue.as_str(),
                "before": before,
                "after": after,
            })),
        }
    }

    /// A version of a queue's payload schema was registered; `breaking`
    /// lists what it breaks when it was forced.
    pub fn queue_schema_registered(
        schema: &crate::schemas::PayloadSchema,
        previous: Option<u32>,
        breaking: &[crate::schemas::Violation],
    ) -> Draft {
        use sha2::Digest;
        let digest = |text: &str| hex::encode(sha2::Sha256::digest(text.as_bytes()));
        Draft {
            action: "queue.schema_registered",
            target: schema.queue.to_string(),
            job_id: None,
            summary: summary(json!({
                "queue": schema.queue.as_str(),
                "version": schema.version,
                "previous_version": previous,
                "schema_sha256": digest(&schema.schema),
                "output_schema_sha256": schema.output_schema.as_deref().map(digest),
                "forced": schema.forced,
                "reason": schema.reason,
                "breaking": breaking
                    .iter()
                    .map(|found| json!({"pointer": found.pointer, "rule": found.rule}))
                    .collect::<Vec<_>>(),
            })),
        }
    }

    /// A schedule was created or changed: what it enqueues, and when.
    pub fn schedule_set(
        name: &steadfast_core::ScheduleName,
        before: Option<&crate::schedules::ScheduleSpec>,
        after: &crate::schedules::ScheduleSpec,
    ) -> Draft {
        Draft {
            action: "schedule.set",
            target: name.to_string(),
            job_id: None,
            summary: summary(json!({
                "schedule": name.as_str(),
                "before": before.map(schedule_summary),
                "after": schedule_summary(after),
            })),
        }
    }

    pub fn schedule_paused(name: &steadfast_core::ScheduleName, paused: bool) -> Draft {
        Draft {
            action: if paused { "schedule.paused" } else { "schedule.resumed" },
            target: name.to_string(),
            job_id: None,
            summary: summary(json!({ "schedule": name.as_str() })),
        }
    }

    pub fn schedule_deleted(name: &steadfast_core::ScheduleName, spec: &crate::schedules::ScheduleSpec) -> Draft {
        Draft {
            action: "schedule.deleted",
            target: name.to_string(),
            job_id: None,
            summary: summary(json!({ "schedule": name.as_str(), "was": schedule_summary(spec) })),
        }
    }

    /// A schedule's spec in its records; the payload by its SHA-256 (it
    /// may be large, and the job records carry it).
    fn schedule_summary(spec: &crate::schedules::ScheduleSpec) -> serde_json::Value {
        use sha2::Digest;
        json!({
            "cron": spec.cron,
            "timezone": spec.timezone,
            "queue": spec.queue.as_str(),
            "payload_sha256": hex::encode(sha2::Sha256::digest(spec.payload.as_bytes())),
            "overlap": spec.overlap.as_str(),
            "catch_up": spec.catch_up.as_str(),
        })
    }

    /// A resource was created or its limits and breaker changed.
    pub fn resource_set(
        name: &steadfast_core::ResourceName,
        before: Option<&crate::flow::ResourceConfig>,
        after: &crate::flow::ResourceConfig,
    ) -> Draft {
        Draft {
            action: "resource.set",
            target: name.to_string(),
            job_id: None,
            summary: summary(json!({ "resource": name.as_str(), "before": before, "after": after })),
        }
    }

    pub fn resource_deleted(name: &steadfast_core::ResourceName) -> Draft {
        Draft {
            action: "resource.deleted",
            target: name.to_string(),
            job_id: None,
            summary: summary(json!({ "resource": name.as_str() })),
        }
    }

    pub fn key_rotated(key_id: &KeyId, replaced_by: &KeyId, revoked_at: Timestamp) -> Draft {
        Draft {
            action: "key.rotated",
            target: key_id.to_string(),
            job_id: None,
            summary: summary(json!({ "replaced_by": replaced_by.to_string(), "revoked_at": revoked_at.to_string() })),
        }
    }

    pub fn key_revoked(key_id: &KeyId) -> Draft {
        Draft {
            action: "key.revoked",
            target: key_id.to_string(),
            job_id: None,
            summary: summary(json!({})),
        }
    }

    pub fn auth_failed(failures: &AuthFailures) -> Draft {
        let addresses: Vec<Value> = failures
            .addresses
            .iter()
            .map(|(address, count)| json!({ "address": address, "count": count }))
            .collect();
        Draft {
            action: "auth.failed",
            target: failures
                .key_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| "unknown keys".into()),
            job_id: None,
            summary: summary(json!({
                "key_id": failures.key_id.as_ref().map(ToString::to_string),
                "count": failures.count,
                "first_at": failures.first_at.to_string(),
                "last_at": failures.last_at.to_string(),
                "addresses": addresses,
                "other_addresses": failures.other_addresses,
            })),
        }
    }

    pub fn slo_changed(action: &'static str, slo: &steadfast_core::slo::Slo, details: Value) -> Draft {
        let mut summary = json!({ "name": slo.name, "queue": slo.queue.as_str(), "objective": slo.objective });
        if let (Value::Object(map), Value::Object(extra)) = (&mut summary, details) {
            map.extend(extra);
        }
        Draft {
            action,
            target: slo.id.to_string(),
            job_id: None,
            summary: summary.to_string(),
        }
    }

    /// A source created or deleted; never with its secrets.
    pub fn source_changed(action: &'static str, source: &crate::Source) -> Draft {
        Draft {
            action,
            target: source.id.clone(),
            job_id: None,
            summary: summary(json!({
                "name": source.name,
                "kind": source.kind,
                "queue": source.queue.as_str(),
                "secrets": source.secrets.iter().map(|secret| secret.id.as_str()).collect::<Vec<_>>(),
            })),
        }
    }

    pub fn source_secret_added(
        source_id: &str,
        secret: &crate::SourceSecret,
        retired: &[(String, Timestamp)],
    ) -> Draft {
        let retired: Vec<Value> = retired
            .iter()
            .map(|(id, at)| json!({ "secret_id": id, "expires_at": at.to_string() }))
            .collect();
        Draft {
            action: "source.secret_added",
            target: source_id.to_owned(),
            job_id: None,
            summary: summary(json!({
                "secret_id": secret.id,
                "expires_at": secret.expires_at.map(|at| at.to_string()),
                "retired": retired,
            })),
        }
    }

    pub fn inbox_event_replayed(source_id: &str, event_id: &str, job: &Job) -> Draft {
        Draft {
            action: "inbox.event_replayed",
            target: job.id.to_string(),
            job_id: Some(job.id),
            summary: summary(json!({ "source_id": source_id, "event_id": event_id, "queue": job.queue.as_str() })),
        }
    }

    pub fn inbox_signature_rejected(failures: &crate::SignatureFailures) -> Draft {
        let reasons: serde_json::Map<String, Value> = failures
            .reasons
            .iter()
            .map(|(reason, n)| (reason.clone(), json!(n)))
            .collect();
        Draft {
            action: "inbox.signature_rejected",
            target: failures.source_id.clone(),
            job_id: None,
            summary: summary(json!({
                "count": failures.count,
                "first_at": failures.first_at.to_string(),
                "last_at": failures.last_at.to_string(),
                "reasons": reasons,
            })),
        }
    }

    pub fn audit_pruned(base: Head, removed: usize) -> Draft {
        Draft {
            action: "audit.pruned",
            target: format!("records through {}", base.seq),
            job_id: None,
            summary: summary(json!({ "through_seq": base.seq, "hash": hex_hash(&base.hash), "removed": removed })),
        }
    }
}

pub fn hex_hash(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The outcome of verifying one tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records checked.
    pub records: u64,
    /// The chain's end, if it has records.
    pub head: Option<Head>,
    /// Where the chain started (after a pruned prefix), if it was pruned.
    pub base: Option<Head>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Breach(steadfast_core::audit::Breach),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Recomputes a tenant's chain from the store, in batches, and checks it
/// against any `checkpoints` (seq, hash) someone kept.
pub async fn verify(
    store: &(impl AuditStore + ?Sized),
    scope: &TenantScope,
    checkpoints: &[Head],
) -> Result<Verified, VerifyError> {
    const BATCH: u32 = 1000;
    let base = store.audit_base(scope).await?;
    // The stored head is a checkpoint too: a tail cut without moving it shows.
    let stored_head = store.audit_head(scope).await?;
    let checkpoints: Vec<Head> = checkpoints.iter().copied().chain(stored_head).collect();
    let checkpoints = checkpoints.as_slice();
    let mut verifier = steadfast_core::audit::Verifier::new(base);
    let mut at_checkpoints = std::collections::HashMap::new();
    let mut after = base.map_or(0, |b| b.seq);
    loop {
        let records = store.audit_scan(scope, after, BATCH).await?;
        for record in &records {
            verifier.check(record).map_err(VerifyError::Breach)?;
            if checkpoints.iter().any(|c| c.seq == record.seq) {
                at_checkpoints.insert(record.seq, record.hash);
            }
        }
        match records.last() {
            Some(last) if records.len() == BATCH as usize => after = last.seq,
            _ => break,
        }
    }
    // A checkpoint inside the pruned prefix can no longer be checked record by record.
    let checkable: Vec<Head> = checkpoints
        .iter()
        .copied()
        .filter(|c| base.is_none_or(|b| c.seq > b.seq))
        .collect();
    let records = verifier.checked();
    let head = verifier
        .finish(&checkable, |seq| at_checkpoints.get(&seq).copied())
        .map_err(VerifyError::Breach)?;
    store.check_audit_storage(scope).await?;
    Ok(Verified { records, head, base })
}
