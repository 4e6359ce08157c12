//! Property tests of the whole lifecycle: random sequences of commands with an
//! injected clock, checking the invariants after every step.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::{AttemptError, JobId, KeyId, Limits, QueueName, RetryPolicy, TenantId, Timestamp, WorkerId};

fn start() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn fresh_job(max_attempts: u32, timeout_secs: u64) -> Job {
    let spec = JobSpec {
        queue: QueueName::new("q").unwrap(),
        payload: "{}".into(),
        idempotency: None,
        max_attempts,
        timeout: Duration::from_secs(timeout_secs),
        run_at: None,
        priority: 0,
        traceparent: None,
        flow_key: None,
        resource: None,
        singleton: None,
        schema_version: None,
        producer: None,
    };
    new_job(JobId(uuid::Uuid::nil()), TenantId(uuid::Uuid::nil()), spec, start())
}

fn go_signal(now: Timestamp) -> crate::Signal {
    crate::Signal {
        name: crate::SignalName::new("go").unwrap(),
        payload: "{}".into(),
        received_at: now,
    }
}

fn grant(random: u64) -> LeaseGrant {
    LeaseGrant {
        worker_id: WorkerId::new("w").unwrap(),
        key_id: KeyId::from_random([0; 8]),
        ttl: Duration::from_secs(30),
        token_random: random,
    }
}

#[derive(Debug, Clone)]
enum Command {
    Advance(u64),
    Promote,
    Lease(u64),
    Heartbeat {
        stale: bool,
    },
    Complete {
        stale: bool,
    },
    Fail {
        stale: bool,
        retryable: bool,
    },
    Expire,
    Cancel,
    Retry,
    /// Wait in a step for `secs` (a sleep) or for signal "go" with that deadline.
    Wait {
        stale: bool,
        signal: bool,
        secs: u64,
    },
    Signal,
    FireTimer,
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (0u64..120_000).prop_map(Command::Advance),
        Just(Command::Promote),
        any::<u64>().prop_map(Command::Lease),
        any::<bool>().prop_map(|stale| Command::Heartbeat { stale }),
        any::<bool>().prop_map(|stale| Command::Complete { stale }),
        (any::<bool>(), any::<bool>()).prop_map(|(stale, retryable)| Command::Fail { stale, retryable }),
        Just(Command::Expire),
        Just(Command::Cancel),
        Just(Command::Retry),
        (any::<bool>(), any::<bool>(), 0u64..120).prop_map(|(stale, signal, secs)| Command::Wait {
            stale,
            signal,
            secs
        }),
        Just(Command::Signal),
        Just(Command::FireTimer),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_command_sequences_keep_every_invariant(
        max_attempts in 1u32..6,
        timeout_secs in 1u64..90,
        commands in proptest::collection::vec(command(), 1..80),
        seed: u64,
    ) {
        let policy = RetryPolicy { base: Duration::from_secs(1), cap: Duration::from_secs(60) };
        let mut job = fresh_job(max_attempts, timeout_secs);
        let mut now = start();
        let mut history: Vec<crate::Attempt> = Vec::new();
        let mut pending_signals = 0usize;
        let mut step_counter = 0u32;
        for command in commands {
            let before = job.clone();
            let token = job.lease.as_ref().map(|lease| lease.token.clone());
            let stale_token = format!("{}-stale", token.clone().unwrap_or_default());
            let pick = |stale: bool| if stale { stale_token.clone() } else { token.clone().unwrap_or_default() };
            let live = job.lease.as_ref().is_some_and(|lease| now < lease.expires_at);
            let outcome: Result<Transition, Rejection> = match command {
                Command::Advance(ms) => {
                    now = now.saturating_add(Duration::from_millis(ms)).unwrap();
                    continue;
                }
                Command::Promote => promote(&job, now).map(|job| Transition { job, ended_attempt: None }),
                Command::Lease(random) => lease(&job, grant(random), now).map(|job| Transition { job, ended_attempt: None }),
                Command::Heartbeat { stale } => {
                    let result = heartbeat(&job, &pick(stale), Duration::from_secs(30), now);
                    prop_assert_eq!(result.is_ok(), live && !stale);
                    result.map(|job| Transition { job, ended_attempt: None })
                }
                Command::Complete { stale } => {
                    let result = complete(&job, &pick(stale), "1".into(), now);
                    prop_assert_eq!(result.is_ok(), live && !stale, "complete must need a live lease and its token");
                    result
                }
                Command::Fail { stale, retryable } => {
                    let failure = Failure { error: AttemptError { message: "boom".into(), kind: None }, retryable, retry_after: None };
                    let result = fail(&job, &pick(stale), failure, &policy, seed, now);
                    prop_assert_eq!(result.is_ok(), live && !stale);
                    result
                }
                Command::Expire => {
                    let result = expire(&job, &policy, seed, now);
                    prop_assert_eq!(result.is_ok(), job.state == JobState::Running && !live);
                    result
                }
                Command::Wait { stale, signal, secs } => {
                    step_counter += 1;
                    let step = crate::StepName::new(format!("wait-{step_counter}")).unwrap();
                    let at = now.saturating_add(Duration::from_secs(secs)).unwrap();
                    let wait_for = if signal {
                        crate::WaitFor::Signal { name: crate::SignalName::new("go").unwrap(), deadline: Some(at) }
                    } else {
                        crate::WaitFor::Until(at)
                    };
                    let pending = (signal && pending_signals > 0).then(|| go_signal(now));
                    let result = wait(&job, &pick(stale), step, wait_for, None, pending.as_ref(), now);
                    prop_assert_eq!(result.is_ok(), live && !stale);
                    match result {
                        Ok(WaitOutcome::Suspended(transition)) => {
                            prop_assert!(secs > 0 && !(signal && pending_signals > 0));
                            Ok(*transition)
                        }
                        Ok(WaitOutcome::Resolved { consumed_signal, .. }) => {
                            pending_signals -= usize::from(consumed_signal);
                            Ok(Transition { job: job.clone(), ended_attempt: None })
                        }
                        Ok(WaitOutcome::AlreadyCompleted(_)) => unreachable!("every wait uses a new step"),
                        Err(rejection) => Err(rejection),
                    }
                }
                Command::Signal => match deliver_signal(&job, go_signal(now), now) {
                    Ok(Delivery::Woke { job, step }) => {
                        prop_assert!(step.output.unwrap().contains(r#""outcome":"signal""#));
                        Ok(Transition { job: *job, ended_attempt: None })
                    }
                    Ok(Delivery::Stored) => {
                        pending_signals += 1;
                        Ok(Transition { job: job.clone(), ended_attempt: None })
                    }
                    Err(rejection) => {
                        prop_assert!(job.state.is_terminal());
                        Err(rejection)
                    }
                },
                Command::FireTimer => {
                    let due = job.wait.as_ref().and_then(|w| w.deadline()).is_some_and(|at| at <= now);
                    let result = fire_wait_timer(&job, now);
                    prop_assert_eq!(result.is_ok(), job.state == JobState::Waiting && due);
                    result.map(|(job, _)| Transition { job, ended_attempt: None })
                }
                Command::Cancel => cancel(&job, now),
                Command::Retry => retry(&job, now).map(|job| Transition { job, ended_attempt: None }),
            };
            match outcome {
                Ok(transition) => {
                    job = transition.job;
                    if let Some(attempt) = transition.ended_attempt {
                        prop_assert_eq!(attempt.number as usize, history.len() + 1, "attempts end in order, once each");
                        prop_assert_eq!(Some(attempt.number), before.running_attempt().map(|(n, _)| n));
                        history.push(attempt);
                    }
                }
                Err(_) => prop_assert_eq!(&job, &before),
            }
            prop_assert!(job.check_invariants().is_ok(), "{:?}: {:?}", job.check_invariants(), job);
            prop_assert!(job.updated_at <= now);
            if before.state.is_terminal() && job.state != before.state {
                prop_assert!(matches!(before.state, JobState::Dead | JobState::Cancelled));
                prop_assert_eq!(job.state, JobState::Queued);
            }
            if before.state == JobState::Succeeded {
                prop_assert_eq!(&job, &before, "success is final");
            }
            let unfinished = usize::from(job.state == JobState::Running);
            prop_assert_eq!(history.len() + unfinished, job.attempt as usize);
        }
    }
}

#[test]
fn a_failing_job_is_retried_with_backoff_then_dies_with_its_history() {
    let policy = RetryPolicy::default();
    let mut job = fresh_job(2, 60);
    let mut now = start();
    let mut ended = Vec::new();
    for round in 1..=2u32 {
        if job.state == JobState::Scheduled {
            now = job.run_at;
            job = promote(&job, now).unwrap();
        }
        job = lease(&job, grant(u64::from(round)), now).unwrap();
        let token = job.lease.clone().unwrap().token;
        let failure = Failure {
            error: AttemptError {
                message: format!("try {round}"),
                kind: None,
            },
            retryable: true,
            retry_after: None,
        };
        let transition = fail(&job, &token, failure, &policy, u64::MAX, now).unwrap();
        ended.push(transition.ended_attempt.unwrap());
        job = transition.job;
    }
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(ended.iter().map(|a| a.number).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(job.last_error.unwrap().message, "try 2");
}

#[test]
fn a_rate_limited_failure_spends_no_attempt_and_waits_as_long_as_asked() {
    let policy = RetryPolicy {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(10),
    };
    let mut job = fresh_job(1, 60);
    let mut now = start();
    // One attempt in the budget, yet three rate-limited answers in a row
    // leave it unspent; each waits at least the Retry-After it carried.
    for round in 1..=3u32 {
        job = lease(&job, grant(u64::from(round)), now).unwrap();
        let token = job.lease.clone().unwrap().token;
        let failure = Failure {
            error: AttemptError {
                message: "429".into(),
                kind: Some(RATE_LIMITED.into()),
            },
            retryable: true,
            retry_after: Some(Duration::from_secs(30)),
        };
        job = fail(&job, &token, failure, &policy, 0, now).unwrap().job;
        assert_eq!(job.state, JobState::Scheduled);
        assert_eq!(job.attempts_left(), 1, "round {round}");
        assert_eq!(job.run_at, now.saturating_add(Duration::from_secs(30)).unwrap());
        now = job.run_at;
        job = promote(&job, now).unwrap();
    }
    // Any other failure spends the attempt.
    job = lease(&job, grant(9), now).unwrap();
    let token = job.lease.clone().unwrap().token;
    let failure = Failure {
        error: AttemptError {
            message: "503".into(),
            kind: Some("downstream_unavailable".into()),
        },
        retryable: true,
        retry_after: Some(Duration::from_secs(30)),
    };
    assert_eq!(
        fail(&job, &token, failure, &policy, 0, now).unwrap().job.state,
        JobState::Dead
    );
}

#[test]
fn rate_limited_failures_are_free_only_up_to_a_bound() {
    let mut job = lease(&fresh_job(1, 60), grant(1), start()).unwrap();
    job.uncounted_attempts = MAX_UNCOUNTED_ATTEMPTS;
    job.attempt = MAX_UNCOUNTED_ATTEMPTS + 1;
    let token = job.lease.clone().unwrap().token;
    let failure = Failure {
        error: AttemptError {
            message: "429".into(),
            kind: Some(RATE_LIMITED.into()),
        },
        retryable: true,
        retry_after: None,
    };
    let after = fail(&job, &token, failure, &RetryPolicy::default(), 0, start())
        .unwrap()
        .job;
    assert_eq!(
        after.state,
        JobState::Dead,
        "past the bound, a rate limit spends the attempt"
    );
}

#[test]
fn a_release_spends_no_attempt_and_keeps_the_jobs_place_up_to_the_bound() {
    let job = lease(&fresh_job(1, 60), grant(1), start()).unwrap();
    let token = job.lease.clone().unwrap().token;
    let later = start().saturating_add(Duration::from_secs(5)).unwrap();
    let released = release(&job, &token, later).unwrap();
    assert_eq!(released.job.state, JobState::Queued);
    assert_eq!(released.job.run_at, job.run_at, "it keeps its place");
    assert_eq!(released.job.attempts_left(), 1, "its only attempt is not spent");
    assert_eq!(released.ended_attempt.unwrap().outcome, crate::AttemptOutcome::Released);
    assert_eq!(release(&released.job, &token, later), Err(Rejection::LeaseLost));

    let mut worn = job.clone();
    worn.uncounted_attempts = MAX_UNCOUNTED_ATTEMPTS;
    worn.attempt = MAX_UNCOUNTED_ATTEMPTS + 1;
    let dead = release(&worn, &token, later).unwrap().job;
    assert_eq!(
        dead.state,
        JobState::Dead,
        "past the bound, a release spends the attempt"
    );
    assert_eq!(dead.last_error.unwrap().kind.as_deref(), Some("released"));
}

#[test]
fn non_retryable_failure_is_dead_at_once() {
    let job = lease(&fresh_job(10, 60), grant(1), start()).unwrap();
    let token = job.lease.clone().unwrap().token;
    let failure = Failure {
        error: AttemptError {
            message: "bad input".into(),
            kind: None,
        },
        retryable: false,
        retry_after: None,
    };
    let transition = fail(&job, &token, failure, &RetryPolicy::default(), 0, start()).unwrap();
    assert_eq!(transition.job.state, JobState::Dead);
    assert_eq!(transition.job.attempts_left(), 9);
}

#[test]
fn an_expired_lease_is_a_failed_attempt_and_the_job_goes_back() {
    let job = lease(&fresh_job(3, 300), grant(1), start()).unwrap();
    let expiry = job.lease.clone().unwrap().expires_at;
    assert_eq!(
        expire(&job, &RetryPolicy::default(), 0, start()),
        Err(Rejection::NotDue)
    );
    let transition = expire(&job, &RetryPolicy::default(), 0, expiry).unwrap();
    assert_eq!(
        transition.ended_attempt.unwrap().outcome,
        crate::AttemptOutcome::LeaseExpired
    );
    assert_eq!(
        transition.job.state,
        JobState::Queued,
        "a zero jitter sample retries at once"
    );
}

#[test]
fn heartbeats_never_extend_past_the_attempt_deadline() {
    let job = lease(&fresh_job(3, 40), grant(1), start()).unwrap();
    let lease_now = job.lease.clone().unwrap();
    let later = start().saturating_add(Duration::from_secs(25)).unwrap();
    let extended = heartbeat(&job, &lease_now.token, Duration::from_secs(30), later).unwrap();
    assert_eq!(extended.lease.clone().unwrap().expires_at, lease_now.deadline);
    let transition = expire(&extended, &RetryPolicy::default(), 0, lease_now.deadline).unwrap();
    assert_eq!(
        transition.ended_attempt.unwrap().outcome,
        crate::AttemptOutcome::TimedOut
    );
}

#[test]
fn validation_applies_defaults_and_bounds() {
    let limits = Limits::default();
    let request = EnqueueRequest {
        queue: "emails".into(),
        payload: "{}".into(),
        ..Default::default()
    };
    let spec = request.clone().validate(&limits, [0; 32], start()).unwrap();
    assert_eq!(spec.max_attempts, limits.default_max_attempts);
    assert_eq!(spec.timeout, limits.default_timeout);
    let too_many = EnqueueRequest {
        max_attempts: Some(0),
        ..request.clone()
    };
    assert_eq!(
        too_many.validate(&limits, [0; 32], start()).unwrap_err().field,
        "max_attempts"
    );
    let bad_queue = EnqueueRequest {
        queue: "".into(),
        ..request.clone()
    };
    assert_eq!(
        bad_queue.validate(&limits, [0; 32], start()).unwrap_err().field,
        "queue"
    );
    let far = EnqueueRequest {
        run_at: Some(Timestamp::MAX),
        ..request
    };
    assert_eq!(far.validate(&limits, [0; 32], start()).unwrap_err().field, "run_at");
}
