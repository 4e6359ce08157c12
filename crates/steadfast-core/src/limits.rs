//! Every bound Steadfast enforces, in one place, with its default.
//! The server's flags override these; `docs/limits.md` lists them for users.

use std::time::Duration;

/// Bounds on what clients may ask for. All are inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted request body (`413` above it).
    pub max_body_bytes: usize,
    /// Most jobs in one `POST /v1/jobs/batch`.
    pub max_batch_jobs: usize,
    /// Highest `max_attempts` a job may ask for.
    pub max_attempts: u32,
    /// `max_attempts` when the job does not say.
    pub default_max_attempts: u32,
    /// Longest attempt deadline (`timeout_secs`) a job may ask for.
    pub max_timeout: Duration,
    /// Attempt deadline when the job does not say.
    pub default_timeout: Duration,
    /// How long one lease lasts before a heartbeat must extend it (never past the attempt deadline).
    pub lease_ttl: Duration,
    /// Most jobs one lease request may take.
    pub max_lease_jobs: u32,
    /// Longest long-poll of a lease request.
    pub max_lease_wait: Duration,
    /// Highest page size of `GET /v1/jobs`.
    pub max_list_limit: u32,
    /// Page size of `GET /v1/jobs` when the request does not say.
    pub default_list_limit: u32,
    /// How far in the future `run_at` may be.
    pub max_schedule_ahead: Duration,
    /// Priority range; higher runs first.
    pub min_priority: i32,
    pub max_priority: i32,
    /// How long an idempotency key keeps returning the original job.
    pub dedup_window: Duration,
    /// Longest stored error message; longer ones are cut at a character boundary.
    pub max_error_message_bytes: usize,
    /// Longest `debounce_ms` and `debounce_max_ms`.
    pub max_debounce: Duration,
    /// Longest wait a failure may ask for before the job's next attempt (`retry_after_ms`).
    pub max_retry_after: Duration,
    /// Deepest nesting of arrays and objects in a payload or output. Deeper
    /// JSON crashes naive parsers in workers written in other languages.
    pub max_json_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_batch_jobs: 1000,
            max_attempts: 1000,
            default_max_attempts: 25,
            max_timeout: Duration::from_secs(24 * 3600),
            default_timeout: Duration::from_secs(300),
            lease_ttl: Duration::from_secs(30),
            max_lease_jobs: 1000,
            max_lease_wait: Duration::from_secs(30),
            max_list_limit: 500,
            default_list_limit: 50,
            max_schedule_ahead: Duration::from_secs(5 * 365 * 24 * 3600),
            min_priority: -100,
            max_priority: 100,
            dedup_window: Duration::from_secs(48 * 3600),
            max_error_message_bytes: 4096,
            max_json_depth: 64,
            max_retry_after: Duration::from_secs(24 * 3600),
            max_debounce: Duration::from_secs(24 * 3600),
        }
    }
}

/// Cuts `text` to at most `max_bytes`, at a character boundary.
pub fn truncate_utf8(text: &mut String, max_bytes: usize) {
    if text.len() > max_bytes {
        let mut end = max_bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// How deeply arrays and objects nest in `json`, which must be valid JSON.
/// Counts brackets outside strings in one pass, without recursion.
pub fn json_depth(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_ignores_brackets_inside_strings() {
        assert_eq!(json_depth("1"), 0);
        assert_eq!(json_depth(r#"{"a":[1,{"b":2}]}"#), 3);
        assert_eq!(json_depth(r#"{"a":"[[[[\"]]"}"#), 1);
        assert_eq!(json_depth(&format!("{}{}", "[".repeat(100), "]".repeat(100))), 100);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let mut text = "héllo".to_owned();
        truncate_utf8(&mut text, 2);
        assert_eq!(text, "h");
        let mut short = "ok".to_owned();
        truncate_utf8(&mut short, 10);
        assert_eq!(short, "ok");
    }
}
