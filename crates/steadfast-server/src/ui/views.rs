//! The read views: overview, job lists (by queue, state, time and error
//! kind), one job, dead letters, the audit log, webhook sources, and queue
//! policies with resources' breakers. Filters and pages live in the URL.

use std::sync::Arc;

use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use steadfast_core::{Action, JobState, QueueName, StepState, Timestamp, WaitFor};
use steadfast_store::audit::verify;
use steadfast_store::{AuditCursor, AuditQuery, JobCursor, JobQuery};

use super::auth::Viewer;
use super::format::{self, Moment, age, moment, percent, pretty_json};
use super::live::{JobLine, Live, Overview, SloLine};
use super::{Failure, render};
use crate::Engine;

/// The frame around every signed-in page.
pub struct Chrome {
    pub key_name: String,
    pub role: String,
    pub csrf: String,
    pub nav: Vec<NavItem>,
}

pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

impl Chrome {
    pub fn new(viewer: &Viewer, active: &str) -> Chrome {
        let items = [
            ("/ui", "Overview"),
            ("/ui/jobs", "Jobs"),
            ("/ui/dead", "Dead letters"),
            ("/ui/audit", "Audit log"),
            ("/ui/bulk", "Bulk operations"),
            ("/ui/sources", "Webhooks"),
            ("/ui/policies", "Policies"),
            ("/docs", "API reference"),
        ];
        Chrome {
            key_name: viewer.principal.key_name.clone(),
            role: viewer.principal.role.to_string(),
            csrf: viewer.csrf.clone(),
            nav: items
                .into_iter()
                .map(|(href, label)| NavItem {
                    href,
                    label,
                    current: href == active,
                })
                .collect(),
        }
    }
}

// ---------------------------------------------------------------- overview

pub struct QueueLine {
    pub name: String,
    pub scheduled: u64,
    pub queued: u64,
    pub running: u64,
    pub waiting: u64,
    pub succeeded: u64,
    pub dead: u64,
    pub failure_ratio: String,
    pub oldest: String,
    pub idle: bool,
}

/// The overview's live part, also served alone for polling.
#[derive(Template)]
#[template(path = "overview_fragment.html")]
pub struct OverviewLive {
    pub read_at: Moment,
    pub refresh_secs: u64,
    pub queues: Vec<QueueLine>,
    pub slos: Vec<SloLine>,
    pub dead: Vec<JobLine>,
    pub uncertain: Vec<JobLine>,
    pub approvals: Vec<JobLine>,
    pub lapsed: Vec<JobLine>,
    pub idle_queues: Vec<String>,
}

#[derive(Template)]
#[template(path = "overview.html")]
pub struct OverviewPage {
    pub chrome: Chrome,
    pub live: OverviewLive,
}

/// A queue with ready jobs this long and nothing running has no worker.
const IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

fn live_part(overview: &Overview, now: Timestamp, refresh_secs: u64) -> OverviewLive {
    let queues: Vec<QueueLine> = overview
        .queues
        .iter()
        .map(|q| {
            let (succeeded, dead) = (q.finished(JobState::Succeeded), q.finished(JobState::Dead));
            let idle = q.unfinished(JobState::Queued) > 0
                && q.unfinished(JobState::Running) == 0
                && q.oldest_queued
                    .is_some_and(|at| at.saturating_add(IDLE_AFTER).is_ok_and(|limit| limit <= now));
            QueueLine {
                name: q.queue.to_string(),
                scheduled: q.unfinished(JobState::Scheduled),
                queued: q.unfinished(JobState::Queued),
                running: q.unfinished(JobState::Running),
                waiting: q.unfinished(JobState::Waiting),
                succeeded,
                dead,
                failure_ratio: percent(dead, succeeded + dead),
                oldest: q.oldest_queued.map_or_else(|| "–".to_owned(), |at| age(at, now)),
                idle,
            }
        })
        .collect();
    OverviewLive {
        read_at: moment(overview.read_at),
        refresh_secs,
        idle_queues: queues.iter().filter(|q| q.idle).map(|q| q.name.clone()).collect(),
        queues,
        slos: overview.slos.clone(),
        dead: overview.trouble.dead.clone(),
        uncertain: overview.trouble.uncertain.clone(),
        approvals: overview.trouble.approvals.clone(),
        lapsed: overview.trouble.lapsed.clone(),
    }
}

/// `GET /ui`.
pub async fn overview(State(engine): State<Engine>, Extension(live): Extension<Arc<Live>>, viewer: Viewer) -> Response {
    if let Err(failure) = viewer.require(Action::ListJobs) {
        return failure.into_response();
    }
    let refresh = engine.config().dashboard.refresh_every.as_secs();
    match live.overview(&engine, &viewer.principal.scope).await {
        Ok(overview) => {
            let page = OverviewPage {
                chrome: Chrome::new(&viewer, "/ui"),
                live: live_part(&overview, engine.now(), refresh),
            };
            render(StatusCode::OK, &page)
        }
        Err(failure) => failure.into_response(),
    }
}

/// `GET /ui/live/overview`: the live part alone, for htmx to swap in.
pub async fn overview_live(
    State(engine): State<Engine>,
    Extension(live): Extension<Arc<Live>>,
    viewer: Viewer,
) -> Response {
    if let Err(failure) = viewer.require(Action::ListJobs) {
        return failure.into_response();
    }
    let refresh = engine.config().dashboard.refresh_every.as_secs();
    match live.overview(&engine, &viewer.principal.scope).await {
        Ok(overview) => render(StatusCode::OK, &live_part(&overview, engine.now(), refresh)),
        Err(failure) => failure.into_response(),
    }
}

// ---------------------------------------------------------------- job lists

#[derive(Debug, Default, Deserialize)]
pub struct ListFilter {
    pub(super) queue: Option<String>,
    pub(super) state: Option<String>,
    pub(super) kind: Option<String>,
    /// `YYYY-MM-DD` or RFC 3339: jobs created at or after.
    pub(super) from: Option<String>,
    /// Jobs created before.
    pub(super) to: Option<String>,
    pub(super) cursor: Option<String>,
}

pub struct ListedJob {
    pub id: String,
    pub queue: String,
    pub state: &'static str,
    pub attempt: String,
    pub error: String,
    pub created: Moment,
}

#[derive(Template)]
#[template(path = "jobs.html")]
pub struct JobsPage {
    pub chrome: Chrome,
    pub title: String,
    /// The queue a queue view is about (its filter is in the path).
    pub queue_path: Option<String>,
    pub queue: String,
    pub state: String,
    pub kind: String,
    pub from: String,
    pub to: String,
    pub states: Vec<&'static str>,
    pub jobs: Vec<ListedJob>,
    pub next: Option<String>,
    pub first_page: Option<String>,
    pub can_bulk: bool,
}

/// Rows per page of a job list.
const PAGE: u32 = 50;

fn blank_to_none(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// A day (`2026-12-01`, midnight UTC) or an RFC 3339 time.
fn parse_time(field: &str, text: &str) -> Result<Timestamp, Failure> {
    let bad = || {
        Failure::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field}: not a date or time: {text:?}"),
        )
    };
    if let Ok(at) = text.parse::<Timestamp>() {
        return Ok(at);
    }
    let date: jiff::civil::Date = text.parse().map_err(|_| bad())?;
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp())
        .map_err(|_| bad())
}

/// What a query value or path segment keeps unencoded (RFC 3986's unreserved).
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The URL of a list page with these filters (and cursor).
fn list_url(base: &str, pairs: &[(&str, &str)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", percent_encoding::utf8_percent_encode(v, COMPONENT)))
        .collect();
    if query.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", query.join("&"))
    }
}

async fn job_list(
    engine: &Engine,
    viewer: &Viewer,
    path_queue: Option<String>,
    filter: ListFilter,
) -> Result<Response, Failure> {
    viewer.require(Action::ListJobs)?;
    let queue_text = path_queue.clone().or_else(|| blank_to_none(filter.queue));
    let queue = queue_text
        .as_deref()
        .map(QueueName::new)
        .transpose()
        .map_err(|e| Failure::new(StatusCode::UNPROCESSABLE_ENTITY, format!("queue: {}", e.problem)))?;
    let state_text = blank_to_none(filter.state);
    let state = state_text
        .as_deref()
        .map(str::parse::<JobState>)
        .transpose()
        .map_err(|e| Failure::new(StatusCode::UNPROCESSABLE_ENTITY, format!("state: {e}")))?;
    let kind = blank_to_none(filter.kind);
    if kind.as_ref().is_some_and(|k| k.len() > 128) {
        return Err(Failure::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "kind: at most 128 bytes",
        ));
    }
    let (from, to) = (blank_to_none(filter.from), blank_to_none(filter.to));
    let after = blank_to_none(filter.cursor)
        .map(|c| i64::from_str_radix(&c, 16).map(JobCursor))
        .transpose()
        .map_err(|_| Failure::new(StatusCode::UNPROCESSABLE_ENTITY, "cursor: not one this page made"))?;
    let query = JobQuery {
        queue: queue.clone(),
        state,
        error_kind: kind.clone(),
        created_after: from.as_deref().map(|t| parse_time("from", t)).transpose()?,
        created_before: to.as_deref().map(|t| parse_time("to", t)).transpose()?,
        limit: PAGE,
        after,
        time_limit: Some(engine.config().dashboard.query_time_limit),
    };
    let page = engine.store().list_jobs(&viewer.principal.scope, query).await?;
    let base = match &path_queue {
        Some(q) => format!("/ui/queues/{}", percent_encoding::utf8_percent_encode(q, COMPONENT)),
        None => "/ui/jobs".to_owned(),
    };
    let (queue_s, state_s, kind_s, from_s, to_s) = (
        if path_queue.is_some() {
            String::new()
        } else {
            queue_text.clone().unwrap_or_default()
        },
        state_text.clone().unwrap_or_default(),
        kind.clone().unwrap_or_default(),
        from.clone().unwrap_or_default(),
        to.clone().unwrap_or_default(),
    );
    let filters = [
        ("queue", queue_s.as_str()),
        ("state", state_s.as_str()),
        ("kind", kind_s.as_str()),
        ("from", from_s.as_str()),
        ("to", to_s.as_str()),
    ];
    let next = page.next_cursor.map(|JobCursor(seq)| {
        let cursor = format!("{seq:x}");
        let mut pairs = filters.to_vec();
        pairs.push(("cursor", &cursor));
        list_url(&base, &pairs)
    });
    let first_page = after.map(|_| list_url(&base, &filters));
    let jobs = page
        .jobs
        .iter()
        .map(|job| ListedJob {
            id: job.id.to_string(),
            queue: job.queue.to_string(),
            state: job.state.as_str(),
            attempt: format!("{} of {}", job.attempt, job.max_attempts + job.uncounted_attempts),
            error: job
                .last_error
                .as_ref()
                .map(|e| match &e.kind {
                    Some(kind) => format!("{kind}: {}", e.message),
                    None => e.message.clone(),
                })
                .unwrap_or_default(),
            created: moment(job.created_at),
        })
        .collect();
    let title = match &path_queue {
        Some(q) => format!("Queue {q}"),
        None => "Jobs".to_owned(),
    };
    let page = JobsPage {
        chrome: Chrome::new(viewer, "/ui/jobs"),
        title,
        queue_path: path_queue,
        queue: queue_s,
        state: state_s,
        kind: kind_s,
        from: from_s,
        to: to_s,
        states: JobState::ALL.iter().map(|s| s.as_str()).collect(),
        jobs,
        next,
        first_page,
        can_bulk: viewer.may(Action::OperatorAction),
    };
    Ok(render(StatusCode::OK, &page))
}

/// `GET /ui/jobs`: every queue's jobs, newest first, filtered.
pub async fn jobs(State(engine): State<Engine>, viewer: Viewer, Query(filter): Query<ListFilter>) -> Response {
    job_list(&engine, &viewer, None, filter)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /ui/queues/{queue}`: one queue's jobs.
pub async fn queue(
    State(engine): State<Engine>,
    viewer: Viewer,
    Path(queue): Path<String>,
    Query(filter): Query<ListFilter>,
) -> Response {
    job_list(&engine, &viewer, Some(queue), filter)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

// ---------------------------------------------------------------- one job

pub struct Entry {
    pub at: Moment,
    pub what: String,
    pub detail: String,
    pub tone: &'static str,
}

pub struct StepLine {
    pub name: String,
    pub state: &'static str,
    pub attempt: u32,
    pub started: Moment,
    pub completed: Option<Moment>,
    pub output: String,
    pub resolvable: bool,
}

pub struct SignalLine {
    pub name: String,
    pub payload: String,
    pub received: Moment,
    pub consumed: Option<Moment>,
}

pub struct Link {
    pub href: String,
    pub text: String,
}

pub struct AuditLine {
    pub seq: u64,
    pub at: Moment,
    pub action: String,
    pub actor: String,
    pub summary: String,
}

#[derive(Template)]
#[template(path = "job.html")]
pub struct JobPage {
    pub chrome: Chrome,
    pub id: String,
    pub queue: String,
    pub queue_href: String,
    pub state: &'static str,
    pub facts: Vec<(&'static str, String)>,
    pub created: Moment,
    pub finished: Option<Moment>,
    pub payload: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub timeline: Vec<Entry>,
    pub steps: Vec<StepLine>,
    pub signals: Vec<SignalLine>,
    pub awaited: Option<String>,
    pub links: Vec<(&'static str, Link)>,
    pub audit: Vec<AuditLine>,
    pub done: Option<String>,
    pub can_retry: bool,
    pub can_cancel: bool,
    pub can_replay: bool,
    pub can_signal: bool,
    pub can_approve: bool,
    pub can_resolve: bool,
}

#[derive(Debug, Deserialize)]
pub struct JobQueryParams {
    done: Option<String>,
}

/// What a finished action says at the top of the job's page.
fn done_notice(done: Option<&str>) -> Option<String> {
    let what = match done? {
        "retried" => "Retried",
        "cancelled" => "Cancelled",
        "approved" => "Approved: the signal was delivered",
        "rejected" => "Rejected: the signal was delivered",
        "signalled" => "Signal sent",
        "resolved" => "Step resolved",
        "replay" => "This job was made by a replay",
        _ => return None,
    };
    Some(format!("{what}. The reason is in the audit log below."))
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
fn trace_id(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1)
}

fn job_href(id: impl std::fmt::Display) -> String {
    format!("/ui/jobs/{id}")
}

async fn job_page(engine: &Engine, viewer: &Viewer, id: &str, done: Option<&str>) -> Result<Response, Failure> {
    viewer.require(Action::ReadAnyJob)?;
    let id = id.parse().map_err(|_| Failure::not_found())?;
    let scope = &viewer.principal.scope;
    let record = engine.store().job(scope, id).await?.ok_or_else(Failure::not_found)?;
    let job = &record.job;
    // The job's own records; a role that may not read the audit log sees none.
    let audit = if viewer.may(Action::ReadAudit) {
        let query = AuditQuery {
            job_id: Some(id),
            limit: 200,
            ..AuditQuery::default()
        };
        engine.store().audit_records(scope, query).await?.records
    } else {
        Vec::new()
    };
    let event = engine.store().job_event(scope, id).await?;

    let mut facts = vec![
        ("Attempt", format!("{} ({} left)", job.attempt, job.attempts_left())),
        ("Priority", job.priority.to_string()),
        ("Timeout", format::duration(job.timeout)),
        ("Run at", moment(job.run_at).text),
    ];
    for (label, value) in [
        ("Idempotency key", job.idempotency_key.as_ref().map(ToString::to_string)),
        ("Flow key", job.flow_key.as_ref().map(ToString::to_string)),
        ("Resource", job.resource.as_ref().map(ToString::to_string)),
        ("Singleton key", job.singleton_key.as_ref().map(ToString::to_string)),
        (
            "Trace id",
            job.traceparent.as_deref().and_then(trace_id).map(str::to_owned),
        ),
        (
            "Worker",
            job.lease
                .as_ref()
                .map(|l| format!("{} (lease until {})", l.worker_id, moment(l.expires_at).text)),
        ),
    ] {
        if let Some(value) = value {
            facts.push((label, value));
        }
    }

    let mut links = Vec::new();
    if let Some(parent) = &job.parent {
        links.push((
            "Parent",
            Link {
                href: job_href(parent.job_id),
                text: format!("{} (step {})", parent.job_id, parent.step),
            },
        ));
    }
    if let Some(original) = job.replay_of {
        links.push((
            "Replay of",
            Link {
                href: job_href(original),
                text: original.to_string(),
            },
        ));
    }
    for child in &record.children {
        let step = child.parent.as_ref().map_or("", |p| p.step.as_str());
        links.push((
            "Child",
            Link {
                href: job_href(child.id),
                text: format!("{} (step {step}, {})", child.id, child.state),
            },
        ));
    }
    for record in audit.iter().filter(|r| r.action == "job.replayed") {
        let replay: Option<String> = serde_json::from_str::<serde_json::Value>(&record.summary)
            .ok()
            .and_then(|s| s["replay"].as_str().map(str::to_owned));
        if let Some(replay) = replay {
            links.push((
                "Replayed as",
                Link {
                    href: job_href(&replay),
                    text: replay,
                },
            ));
        }
    }
    if let Some(event) = &event {
        links.push((
            "Webhook event",
            Link {
                href: format!("/ui/sources/{}", event.source_id),
                text: format!("{} from source {}", event.event_id, event.source_id),
            },
        ));
    }

    let mut timeline = vec![Entry {
        at: moment(job.created_at),
        what: "enqueued".into(),
        detail: String::new(),
        tone: "",
    }];
    for attempt in &record.attempts {
        timeline.push(Entry {
            at: moment(attempt.started_at),
            what: format!("attempt {} started", attempt.number),
            detail: format!("worker {}", attempt.worker_id),
            tone: "",
        });
        let error = attempt.error.as_ref().map(|e| match &e.kind {
            Some(kind) => format!("{kind}: {}", e.message),
            None => e.message.clone(),
        });
        timeline.push(Entry {
            at: moment(attempt.ended_at),
            what: format!("attempt {} {}", attempt.number, attempt.outcome.as_str()),
            detail: error.unwrap_or_default(),
            tone: match attempt.outcome {
                steadfast_core::AttemptOutcome::Succeeded => "ok",
                steadfast_core::AttemptOutcome::Suspended | steadfast_core::AttemptOutcome::Released => "",
                _ => "bad",
            },
        });
    }
    if let Some((number, lease)) = job.running_attempt() {
        timeline.push(Entry {
            at: moment(lease.started_at),
            what: format!("attempt {number} running"),
            detail: format!("worker {}", lease.worker_id),
            tone: "",
        });
    }
    let may_resolve = viewer.may(Action::OperatorAction) && job.state != JobState::Succeeded;
    let mut steps = Vec::new();
    for step in &record.steps {
        let state = step.state(job);
        timeline.push(Entry {
            at: moment(step.started_at),
            what: format!("step {} started", step.name),
            detail: format!("by attempt {}", step.attempt),
            tone: if state == StepState::Uncertain { "warn" } else { "" },
        });
        if let Some(done) = step.completed_at {
            timeline.push(Entry {
                at: moment(done),
                what: format!("step {} completed", step.name),
                detail: String::new(),
                tone: "ok",
            });
        }
        steps.push(StepLine {
            name: step.name.to_string(),
            state: state.as_str(),
            attempt: step.attempt,
            started: moment(step.started_at),
            completed: step.completed_at.map(moment),
            output: step.output.as_deref().map(pretty_json).unwrap_or_default(),
            resolvable: may_resolve && state == StepState::Uncertain,
        });
    }
    if let Some(finished) = job.finished_at {
        timeline.push(Entry {
            at: moment(finished),
            what: job.state.as_str().to_owned(),
            detail: String::new(),
            tone: if job.state == JobState::Succeeded { "ok" } else { "bad" },
        });
    }
    timeline.sort_by(|a, b| a.at.iso.cmp(&b.at.iso));

    let awaited = match job.wait.as_ref().map(|w| &w.wait_for) {
        Some(WaitFor::Signal { name, .. }) => Some(name.to_string()),
        _ => None,
    };
    let audit_lines = audit.iter().map(audit_line).collect();
    let unfinished = !job.state.is_terminal();
    let page = JobPage {
        chrome: Chrome::new(viewer, "/ui/jobs"),
        id: job.id.to_string(),
        queue: job.queue.to_string(),
        queue_href: format!("/ui/queues/{}", job.queue),
        state: job.state.as_str(),
        facts,
        created: moment(job.created_at),
        finished: job.finished_at.map(moment),
        payload: pretty_json(&job.payload),
        output: job.output.as_deref().map(pretty_json),
        error: job.last_error.as_ref().map(|e| match &e.kind {
            Some(kind) => format!("{kind}: {}", e.message),
            None => e.message.clone(),
        }),
        timeline,
        can_resolve: steps.iter().any(|s| s.resolvable),
        steps,
        signals: record
            .signals
            .iter()
            .map(|s| SignalLine {
                name: s.signal.name.to_string(),
                payload: pretty_json(&s.signal.payload),
                received: moment(s.signal.received_at),
                consumed: s.consumed_at.map(moment),
            })
            .collect(),
        can_approve: awaited.is_some() && viewer.may(Action::Signal),
        awaited,
        links,
        audit: audit_lines,
        done: done_notice(done),
        can_retry: matches!(job.state, JobState::Dead | JobState::Cancelled) && viewer.may(Action::OperatorAction),
        can_cancel: unfinished && viewer.may(Action::OperatorAction),
        can_replay: viewer.may(Action::OperatorAction),
        can_signal: unfinished && viewer.may(Action::Signal),
    };
    Ok(render(StatusCode::OK, &page))
}

fn audit_line(record: &steadfast_core::audit::Record) -> AuditLine {
    let actor = match record.actor.key_id() {
        Some(key_id) => format!("{} ({key_id})", record.actor.name()),
        None => record.actor.name().to_owned(),
    };
    AuditLine {
        seq: record.seq,
        at: moment(record.at),
        action: record.action.clone(),
        actor,
        summary: record.summary.clone(),
    }
}

/// `GET /ui/jobs/{id}`.
pub async fn job(
    State(engine): State<Engine>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(params): Query<JobQueryParams>,
) -> Response {
    job_page(&engine, &viewer, &id, params.done.as_deref())
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

// ---------------------------------------------------------------- dead letters

pub struct DeadLine {
    pub kind: String,
    pub count: u64,
    pub latest: Moment,
    pub href: String,
}

#[derive(Template)]
#[template(path = "dead.html")]
pub struct DeadPage {
    pub chrome: Chrome,
    pub groups: Vec<DeadLine>,
}

/// The kind shown for dead jobs whose worker gave none.
const NO_KIND: &str = "(no kind)";

/// `GET /ui/dead`: dead jobs grouped by error kind, each group a link to its jobs.
pub async fn dead(State(engine): State<Engine>, viewer: Viewer) -> Response {
    let read = async {
        viewer.require(Action::ListJobs)?;
        let limit = engine.config().dashboard.query_time_limit;
        let groups = engine.store().dead_groups(&viewer.principal.scope, limit).await?;
        let groups = groups
            .into_iter()
            .map(|g| DeadLine {
                href: match &g.kind {
                    Some(kind) => list_url("/ui/jobs", &[("state", "dead"), ("kind", kind)]),
                    None => list_url("/ui/jobs", &[("state", "dead")]),
                },
                kind: g.kind.unwrap_or_else(|| NO_KIND.to_owned()),
                count: g.count,
                latest: moment(g.latest),
            })
            .collect();
        Ok::<_, Failure>(render(
            StatusCode::OK,
            &DeadPage {
                chrome: Chrome::new(&viewer, "/ui/dead"),
                groups,
            },
        ))
    };
    read.await.unwrap_or_else(IntoResponse::into_response)
}

// ---------------------------------------------------------------- audit log

#[derive(Debug, Default, Deserialize)]
pub struct AuditFilter {
    action: Option<String>,
    actor: Option<String>,
    job: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// `<millis>.<seq>` of the previous page's last record.
    after: Option<String>,
}

#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub chrome: Chrome,
    pub action: String,
    pub actor: String,
    pub job: String,
    pub from: String,
    pub to: String,
    pub records: Vec<AuditLine>,
    pub next: Option<String>,
    pub chain: String,
    pub chain_ok: Option<bool>,
    pub can_verify: bool,
}

/// `GET /ui/audit`: the tenant's records, oldest first from `from` (the
/// last day unless given), with the chain's last verification.
pub async fn audit(
    State(engine): State<Engine>,
    Extension(live): Extension<Arc<Live>>,
    viewer: Viewer,
    Query(filter): Query<AuditFilter>,
) -> Response {
    audit_page(&engine, &live, &viewer, filter)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn audit_page(engine: &Engine, live: &Live, viewer: &Viewer, filter: AuditFilter) -> Result<Response, Failure> {
    viewer.require(Action::ReadAudit)?;
    let invalid = |what: &str| Failure::new(StatusCode::UNPROCESSABLE_ENTITY, what.to_owned());
    let (action, actor, job, from, to) = (
        blank_to_none(filter.action),
        blank_to_none(filter.actor),
        blank_to_none(filter.job),
        blank_to_none(filter.from),
        blank_to_none(filter.to),
    );
    if [&action, &actor]
        .iter()
        .any(|v| v.as_ref().is_some_and(|v| v.len() > 128))
    {
        return Err(invalid("action and actor: at most 128 bytes"));
    }
    let job_id = job
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|_| invalid("job: not a job id"))?;
    let day_ago = engine
        .now()
        .saturating_sub(std::time::Duration::from_secs(86_400))
        .unwrap_or(engine.now());
    let since = match &from {
        Some(text) => parse_time("from", text)?,
        None => day_ago,
    };
    let after = blank_to_none(filter.after)
        .map(|text| {
            let (millis, seq) = text.split_once('.')?;
            let at = Timestamp::from_millisecond(millis.parse().ok()?).ok()?;
            Some(AuditCursor {
                at,
                seq: seq.parse().ok()?,
            })
        })
        .map(|cursor| cursor.ok_or_else(|| invalid("after: not a position this page made")))
        .transpose()?;
    let query = AuditQuery {
        since: Some(since),
        until: to.as_deref().map(|t| parse_time("to", t)).transpose()?,
        actor: actor.clone(),
        action: action.clone(),
        job_id,
        limit: 100,
        after,
    };
    let page = engine.store().audit_records(&viewer.principal.scope, query).await?;
    let (action_s, actor_s, job_s, from_s, to_s) = (
        action.unwrap_or_default(),
        actor.unwrap_or_default(),
        job.unwrap_or_default(),
        from.unwrap_or_default(),
        to.unwrap_or_default(),
    );
    let next = page.next.map(|cursor| {
        let position = format!("{}.{}", cursor.at.as_millisecond(), cursor.seq);
        list_url(
            "/ui/audit",
            &[
                ("action", &action_s),
                ("actor", &actor_s),
                ("job", &job_s),
                ("from", &from_s),
                ("to", &to_s),
                ("after", &position),
            ],
        )
    });
    let (chain, chain_ok) = match live.verification(viewer.principal.scope.tenant_id()) {
        Some(v) if v.intact => (
            format!("Verified through seq {} at {}", v.head_seq, moment(v.at).text),
            Some(true),
        ),
        Some(v) => (
            format!("Verification failed at {}: {}", moment(v.at).text, v.problem),
            Some(false),
        ),
        None => ("Not verified since this server started.".to_owned(), None),
    };
    let page = AuditPage {
        chrome: Chrome::new(viewer, "/ui/audit"),
        action: action_s,
        actor: actor_s,
        job: job_s,
        from: from_s,
        to: to_s,
        records: page.records.iter().map(audit_line).collect(),
        next,
        chain,
        chain_ok,
        can_verify: viewer.may(Action::OperatorAction),
    };
    Ok(render(StatusCode::OK, &page))
}

/// Verifies the tenant's chain now (what "Verify now" runs).
pub async fn verify_now(engine: &Engine, live: &Live, viewer: &Viewer) -> Result<(), Failure> {
    let scope = &viewer.principal.scope;
    let verification = match verify(engine.store(), scope, &[]).await {
        Ok(verified) => super::live::Verification {
            at: engine.now(),
            intact: true,
            head_seq: verified.head.map_or(0, |h| h.seq),
            problem: String::new(),
        },
        Err(steadfast_store::audit::VerifyError::Breach(breach)) => super::live::Verification {
            at: engine.now(),
            intact: false,
            head_seq: 0,
            problem: breach.to_string(),
        },
        Err(steadfast_store::audit::VerifyError::Store(error)) => return Err(error.into()),
    };
    live.set_verification(scope.tenant_id(), verification);
    Ok(())
}

// ---------------------------------------------------------------- webhooks

pub struct SourceLine {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub queue: String,
    pub secrets: usize,
    pub created: Moment,
}

pub struct EventLine {
    pub event_id: String,
    pub received: Moment,
    pub bytes: u64,
    pub duplicates: u64,
    pub job: String,
    pub replays: usize,
}

#[derive(Template)]
#[template(path = "sources.html")]
pub struct SourcesPage {
    pub chrome: Chrome,
    pub sources: Vec<SourceLine>,
    pub selected: Option<SourceLine>,
    pub events: Vec<EventLine>,
}

fn source_line(source: &steadfast_store::Source) -> SourceLine {
    SourceLine {
        id: source.id.clone(),
        name: source.name.clone(),
        kind: source.kind.clone(),
        queue: source.queue.to_string(),
        secrets: source.secrets.len(),
        created: moment(source.created_at),
    }
}

async fn sources_page(engine: &Engine, viewer: &Viewer, selected: Option<String>) -> Result<Response, Failure> {
    viewer.require(Action::ReadAudit)?;
    let scope = &viewer.principal.scope;
    let sources = engine.store().list_sources(scope).await?;
    let (selected, events) = match selected {
        None => (None, Vec::new()),
        Some(id) => {
            let source = sources.iter().find(|s| s.id == id).ok_or_else(|| {
                Failure::new(StatusCode::NOT_FOUND, "There is no such webhook source in this tenant.")
            })?;
            let page = engine.store().list_events(scope, &source.id, 50, None).await?;
            let events = page
                .events
                .iter()
                .map(|e| EventLine {
                    event_id: e.event_id.clone(),
                    received: moment(e.received_at),
                    bytes: e.body_bytes,
                    duplicates: e.duplicates,
                    job: e.job_id.to_string(),
                    replays: e.replays.len(),
                })
                .collect();
            (Some(source_line(source)), events)
        }
    };
    let page = SourcesPage {
        chrome: Chrome::new(viewer, "/ui/sources"),
        sources: sources.iter().map(source_line).collect(),
        selected,
        events,
    };
    Ok(render(StatusCode::OK, &page))
}

/// `GET /ui/sources`.
pub async fn sources(State(engine): State<Engine>, viewer: Viewer) -> Response {
    sources_page(&engine, &viewer, None)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /ui/sources/{id}`: a source and its recent events.
pub async fn source(State(engine): State<Engine>, viewer: Viewer, Path(id): Path<String>) -> Response {
    sources_page(&engine, &viewer, Some(id))
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

// ---------------------------------------------------------------- policies

pub struct PolicyLine {
    pub queue: String,
    pub paused: bool,
    pub rules: String,
    pub held: String,
}

pub struct ResourceLine {
    pub name: String,
    pub breaker: &'static str,
    pub tone: &'static str,
    pub window: String,
    pub opened: Option<Moment>,
    pub config: String,
}

#[derive(Template)]
#[template(path = "policies.html")]
pub struct PoliciesPage {
    pub chrome: Chrome,
    pub queues: Vec<PolicyLine>,
    pub resources: Vec<ResourceLine>,
}

/// `GET /ui/policies`: each queue's flow rules and what they hold back, and
/// each resource's breaker.
pub async fn policies(State(engine): State<Engine>, viewer: Viewer) -> Response {
    let read = async {
        viewer.require(Action::ListJobs)?;
        let (scope, now) = (&viewer.principal.scope, engine.now());
        let overviews = engine.store().queue_overviews(scope, now).await?;
        let resources = engine.store().resources(scope, now).await?;
        let queues = overviews
            .iter()
            .map(|o| {
                let mut rules = serde_json::to_value(&o.policy).unwrap_or_default();
                if let Some(map) = rules.as_object_mut() {
                    map.remove("paused");
                }
                let held: Vec<String> = o
                    .held
                    .reasons()
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(why, n)| format!("{n} by {why}"))
                    .collect();
                PolicyLine {
                    queue: o.queue.to_string(),
                    paused: o.policy.paused,
                    rules: if rules.as_object().is_some_and(|m| m.is_empty()) {
                        "none".into()
                    } else {
                        rules.to_string()
                    },
                    held: if held.is_empty() { "–".into() } else { held.join(", ") },
                }
            })
            .collect();
        let resources = resources
            .iter()
            .map(|r| {
                use steadfast_store::flow::BreakerState;
                let (breaker, tone) = match r.state.breaker {
                    BreakerState::Closed => ("closed", "ok"),
                    BreakerState::Open => ("open", "bad"),
                    BreakerState::HalfOpen => ("half open", "warn"),
                };
                ResourceLine {
                    name: r.name.to_string(),
                    breaker,
                    tone,
                    window: format!("{} failed of {}", r.state.window_failures, r.state.window_requests),
                    opened: r.state.opened_at.map(moment),
                    config: serde_json::to_string(&r.config).unwrap_or_default(),
                }
            })
            .collect();
        Ok::<_, Failure>(render(
            StatusCode::OK,
            &PoliciesPage {
                chrome: Chrome::new(&viewer, "/ui/policies"),
                queues,
                resources,
            },
        ))
    };
    read.await.unwrap_or_else(IntoResponse::into_response)
}

// ---------------------------------------------------------------- bulk operations

pub struct BulkLine {
    pub id: String,
    pub action: &'static str,
    /// The audit action of each job it changes.
    pub job_action: &'static str,
    pub status: &'static str,
    pub filter: String,
    pub reason: String,
    pub by: String,
    pub matched: u64,
    pub done: u64,
    pub failed: u64,
    pub created: Moment,
    pub finished: Option<Moment>,
    pub failures: Vec<(String, String)>,
}

/// The filter in words: `queue=pay, state=dead, kind=declined`.
fn describe_filter(filter: &steadfast_store::bulk::BulkFilter) -> String {
    let mut parts = Vec::new();
    for (name, value) in [
        ("queue", &filter.queue),
        ("state", &filter.state),
        ("kind", &filter.error_kind),
    ] {
        if let Some(value) = value {
            parts.push(format!("{name}={value}"));
        }
    }
    if let Some(at) = filter.created_after {
        parts.push(format!("created from {}", moment(at).text));
    }
    if let Some(at) = filter.created_before {
        parts.push(format!("created before {}", moment(at).text));
    }
    if parts.is_empty() {
        "every job it applies to".into()
    } else {
        parts.join(", ")
    }
}

pub fn bulk_line(op: &steadfast_store::bulk::BulkOperation) -> BulkLine {
    BulkLine {
        id: op.id.to_string(),
        action: op.spec.action.as_str(),
        job_action: match op.spec.action {
            steadfast_store::bulk::BulkAction::Retry => "job.retried",
            steadfast_store::bulk::BulkAction::Cancel => "job.cancelled",
        },
        status: op.status.as_str(),
        filter: describe_filter(&op.spec.filter),
        reason: op.spec.reason.clone(),
        by: format!("{} ({})", op.spec.key_name, op.spec.key_id),
        matched: op.matched,
        done: op.done,
        failed: op.failed,
        created: moment(op.created_at),
        finished: op.finished_at.map(moment),
        failures: op
            .failures
            .iter()
            .map(|f| (f.job_id.clone(), f.error.clone()))
            .collect(),
    }
}

#[derive(Template)]
#[template(path = "bulk_list.html")]
pub struct BulkListPage {
    pub chrome: Chrome,
    pub operations: Vec<BulkLine>,
}

/// `GET /ui/bulk`: the tenant's bulk operations, newest first.
pub async fn bulk_list(State(engine): State<Engine>, viewer: Viewer) -> Response {
    let read = async {
        viewer.require(Action::ListJobs)?;
        let operations = engine.store().list_bulk(&viewer.principal.scope, 100).await?;
        let page = BulkListPage {
            chrome: Chrome::new(&viewer, "/ui/bulk"),
            operations: operations.iter().map(bulk_line).collect(),
        };
        Ok::<_, Failure>(render(StatusCode::OK, &page))
    };
    read.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Template)]
#[template(path = "bulk_progress.html")]
pub struct BulkProgress {
    pub op: BulkLine,
    pub refresh_secs: u64,
}

#[derive(Template)]
#[template(path = "bulk_op.html")]
pub struct BulkPage {
    pub chrome: Chrome,
    pub progress: BulkProgress,
    pub can_stop: bool,
}

async fn bulk_operation(engine: &Engine, viewer: &Viewer, id: &str) -> Result<BulkProgress, Failure> {
    viewer.require(Action::ListJobs)?;
    let missing = || Failure::new(StatusCode::NOT_FOUND, "There is no such bulk operation in this tenant.");
    let id: uuid::Uuid = id.parse().map_err(|_| missing())?;
    let op = engine
        .store()
        .bulk(&viewer.principal.scope, id)
        .await?
        .ok_or_else(missing)?;
    Ok(BulkProgress {
        op: bulk_line(&op),
        refresh_secs: engine.config().dashboard.refresh_every.as_secs(),
    })
}

/// `GET /ui/bulk/{id}`: one operation: who, when, the filter, progress,
/// and what failed.
pub async fn bulk(State(engine): State<Engine>, viewer: Viewer, Path(id): Path<String>) -> Response {
    match bulk_operation(&engine, &viewer, &id).await {
        Ok(progress) => {
            let page = BulkPage {
                can_stop: progress.op.status == "running" && viewer.may(Action::OperatorAction),
                chrome: Chrome::new(&viewer, "/ui/bulk"),
                progress,
            };
            render(StatusCode::OK, &page)
        }
        Err(failure) => failure.into_response(),
    }
}

/// `GET /ui/bulk/{id}/progress`: the progress alone, for htmx to poll.
pub async fn bulk_progress(State(engine): State<Engine>, viewer: Viewer, Path(id): Path<String>) -> Response {
    match bulk_operation(&engine, &viewer, &id).await {
        Ok(progress) => render(StatusCode::OK, &progress),
        Err(failure) => failure.into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct BulkQuery {
    action: String,
    #[serde(flatten)]
    filter: ListFilter,
}

#[derive(Template)]
#[template(path = "bulk_new.html")]
pub struct BulkNewPage {
    pub chrome: Chrome,
    pub action: &'static str,
    pub verb: &'static str,
    pub matched: u64,
    pub described: String,
    pub queue: String,
    pub state: String,
    pub kind: String,
    pub from: String,
    pub to: String,
}

/// The bulk filter of a job list's filters, as the list page carries them.
pub fn bulk_filter(
    action: steadfast_store::bulk::BulkAction,
    filter: ListFilter,
) -> Result<(steadfast_store::bulk::BulkFilter, [String; 5]), Failure> {
    let texts = [
        blank_to_none(filter.queue).unwrap_or_default(),
        blank_to_none(filter.state).unwrap_or_default(),
        blank_to_none(filter.kind).unwrap_or_default(),
        blank_to_none(filter.from).unwrap_or_default(),
        blank_to_none(filter.to).unwrap_or_default(),
    ];
    let some = |text: &String| (!text.is_empty()).then(|| text.clone());
    let state = some(&texts[1])
        .map(|s| s.parse::<JobState>())
        .transpose()
        .map_err(|e| Failure::new(StatusCode::UNPROCESSABLE_ENTITY, format!("state: {e}")))?;
    let wire = steadfast_protocol::BulkFilter {
        queue: some(&texts[0]),
        state: state.map(crate::api::convert::state),
        error_kind: some(&texts[2]),
        created_after: some(&texts[3]).map(|t| parse_time("from", &t)).transpose()?,
        created_before: some(&texts[4]).map(|t| parse_time("to", &t)).transpose()?,
    };
    Ok((crate::api::bulk::filter(action, wire)?, texts))
}

pub fn bulk_action(text: &str) -> Result<steadfast_store::bulk::BulkAction, Failure> {
    match text {
        "retry" => Ok(steadfast_store::bulk::BulkAction::Retry),
        "cancel" => Ok(steadfast_store::bulk::BulkAction::Cancel),
        _ => Err(Failure::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "action: retry or cancel",
        )),
    }
}

/// `GET /ui/bulk/new?action=…&<the list's filters>`: the dry run, and the
/// confirmation that names the count.
pub async fn bulk_new(State(engine): State<Engine>, viewer: Viewer, Query(query): Query<BulkQuery>) -> Response {
    let read = async {
        viewer.require(Action::OperatorAction)?;
        let action = bulk_action(&query.action)?;
        let (filter, [queue, state, kind, from, to]) = bulk_filter(action, query.filter)?;
        let limit = engine.config().dashboard.query_time_limit;
        let matched = engine
            .count_bulk(&viewer.principal.scope, action, &filter, Some(limit))
            .await?;
        let page = BulkNewPage {
            chrome: Chrome::new(&viewer, "/ui/bulk"),
            action: action.as_str(),
            verb: match action {
                steadfast_store::bulk::BulkAction::Retry => "Retry",
                steadfast_store::bulk::BulkAction::Cancel => "Cancel",
            },
            matched,
            described: describe_filter(&filter),
            queue,
            state,
            kind,
            from,
            to,
        };
        Ok::<_, Failure>(render(StatusCode::OK, &page))
    };
    read.await.unwrap_or_else(IntoResponse::into_response)
}
