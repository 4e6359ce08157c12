//! How the dashboard shows times, durations, ratios and JSON.

use std::time::Duration;

use steadfast_core::Timestamp;

/// A moment as the page shows it: UTC text, and the exact instant for the
/// script that switches the page to local time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moment {
    /// RFC 3339, UTC, to the millisecond (the `datetime` attribute).
    pub iso: String,
    /// `2026-12-02 00:41:23 UTC`.
    pub text: String,
}

pub fn moment(at: Timestamp) -> Moment {
    Moment {
        iso: at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        text: at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
    }
}

/// `3d 4h`, `2h 5m`, `4m 12s`, `12s`, `850ms`: the two largest units.
pub fn duration(span: Duration) -> String {
    let secs = span.as_secs();
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) if secs == 0 => format!("{}ms", span.as_millis()),
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// The time from `since` to `now`, never negative.
pub fn age(since: Timestamp, now: Timestamp) -> String {
    let millis = (now.as_millisecond() - since.as_millisecond()).max(0);
    duration(Duration::from_millis(millis as u64))
}

/// `12.5%`, or `–` when nothing was counted.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "–".into();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

/// Stored JSON text, indented; anything that is not JSON as it is.
pub fn pretty_json(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .and_then(|value| serde_json::to_string_pretty(&value))
        .unwrap_or_else(|_| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_show_their_two_largest_units() {
        let cases = [
            (Duration::from_millis(850), "850ms"),
            (Duration::from_secs(12), "12s"),
            (Duration::from_secs(252), "4m 12s"),
            (Duration::from_secs(7500), "2h 5m"),
            (Duration::from_secs(4 * 86_400 + 3 * 3600 + 59), "4d 3h"),
        ];
        for (span, text) in cases {
            assert_eq!(duration(span), text);
        }
        assert_eq!(percent(1, 8), "12.5%");
        assert_eq!(percent(0, 0), "–");
        assert_eq!(pretty_json(r#"{"a":[1]}"#), "{\n  \"a\": [\n    1\n  ]\n}");
        let at = Timestamp::from_millisecond(1_800_000_000_123).unwrap();
        assert_eq!(moment(at).iso, "2027-01-15T08:00:00.123Z");
        assert_eq!(moment(at).text, "2027-01-15 08:00:00 UTC");
    }
}
