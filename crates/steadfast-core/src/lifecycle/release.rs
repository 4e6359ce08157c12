//! A worker hands a job back unfinished (it is shutting down): the attempt
//! ends, spends nothing, and the job is ready again at once.

use super::{MAX_UNCOUNTED_ATTEMPTS, Rejection, Transition, end_attempt, require_live_lease};

use crate::{AttemptError, AttemptOutcome, Job, JobState, Timestamp};

pub fn release(job: &Job, token: &str, now: Timestamp) -> Result<Transition, Rejection> {
    require_live_lease(job, token, now)?;
    let mut next = job.clone();
    let attempt = end_attempt(&mut next, AttemptOutcome::Released, None, now);
    // Like a rate-limited failure, a handed-back attempt is free up to the
    // cap on uncounted attempts: a worker that keeps handing a job back
    // (a crash loop at startup) cannot keep it alive forever.
    if next.uncounted_attempts < MAX_UNCOUNTED_ATTEMPTS {
        next.uncounted_attempts += 1;
    }
    next.updated_at = now;
    if next.attempts_left() == 0 {
        next.state = JobState::Dead;
        next.finished_at = Some(now);
        next.last_error = Some(AttemptError {
            message: format!(
                "handed back by its workers with no attempt left (over {MAX_UNCOUNTED_ATTEMPTS} uncounted attempts)"
            ),
            kind: Some("released".into()),
        });
    } else {
        // Its `run_at` stays: it was ready already, and keeps its place
        // among the jobs of its priority rather than going to the back.
        next.state = JobState::Queued;
    }
    Ok(Transition {
        job: next,
        ended_attempt: Some(attempt),
    })
}
