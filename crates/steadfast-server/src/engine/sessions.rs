//! Dashboard sessions: server-side, in this node's memory.
//!
//! Signing in at `/ui/login` with an API key makes a session; the browser
//! holds only a random token in an `HttpOnly` cookie. The key itself stays
//! here and is authenticated again on every request, so revoking it, its
//! expiry or its tenant's rate limit end the session's rights at once.
//! Sessions end when idle for `idle`, after `lifetime` whatever their use,
//! or at sign-out; a restart signs everyone out. Behind a load balancer of
//! several nodes a session lives on the node that made it, so route the
//! dashboard by its cookie (sticky sessions).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use steadfast_core::Timestamp;

/// Bounds on the dashboard: its sessions and what its pages may cost; see
/// docs/limits.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DashboardLimits {
    /// A session unused this long ends.
    pub idle: Duration,
    /// A session ends this long after sign-in, however busy.
    pub lifetime: Duration,
    /// Sessions held at once per node; past it, the least recently used ends.
    pub max_sessions: usize,
    /// A dashboard read still running after this is stopped.
    pub query_time_limit: Duration,
    /// How often live views ask for fresh numbers; the server answers a
    /// tenant's same view from what it read within this long (never less
    /// than 2 s).
    pub refresh_every: Duration,
}

impl Default for DashboardLimits {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30 * 60),
            lifetime: Duration::from_secs(12 * 3600),
            max_sessions: 10_000,
            query_time_limit: Duration::from_secs(2),
            refresh_every: Duration::from_secs(5),
        }
    }
}

/// The most sessions one API key holds at once: signing in again past it
/// ends that key's least recently used session, not anyone else's.
pub const MAX_SESSIONS_PER_KEY: usize = 20;

/// What a live session holds.
#[derive(Debug, Clone)]
pub struct Session {
    /// The API key signed in with: authenticated again on every request.
    pub secret: String,
    /// The token every form of this session carries (CSRF).
    pub csrf: String,
    created_at: Timestamp,
    last_seen: Timestamp,
}

/// The sessions of this node, keyed by the SHA-256 of their token (a
/// lookup's timing then says nothing about the tokens held).
#[derive(Debug, Default)]
pub struct Sessions {
    held: Mutex<HashMap<[u8; 32], Session>>,
}

/// A random token of 256 bits, URL-safe.
pub fn token(mut random: impl FnMut() -> u64) -> String {
    let bytes: Vec<u8> = (0..4).flat_map(|_| random().to_le_bytes()).collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    /// Starts a session for `secret`; answers its token and CSRF token.
    pub fn start(
        &self,
        secret: String,
        token: String,
        csrf: String,
        limits: DashboardLimits,
        now: Timestamp,
    ) -> Session {
        let session = Session {
            secret,
            csrf,
            created_at: now,
            last_seen: now,
        };
        let mut held = self.held.lock().expect("the session map is never poisoned");
        held.retain(|_, s| live(s, limits, now));
        // A key past its own bound gives up its own oldest session first.
        let same_key = |s: &Session| s.secret == session.secret;
        while held.values().filter(|s| same_key(s)).count() >= MAX_SESSIONS_PER_KEY {
            evict_least_recent(&mut held, same_key);
        }
        while held.len() >= limits.max_sessions.max(1) {
            evict_least_recent(&mut held, |_| true);
        }
        held.insert(digest(&token), session.clone());
        session
    }

    /// The live session of `token`; `None` once it ended. A person's
    /// request (`used`) marks it used now; a page's own polling does not,
    /// so an unattended tab still ends when idle.
    pub fn touch(&self, token: &str, limits: DashboardLimits, now: Timestamp, used: bool) -> Option<Session> {
        let mut held = self.held.lock().expect("the session map is never poisoned");
        let key = digest(token);
        let session = held.get_mut(&key)?;
        if !live(session, limits, now) {
            held.remove(&key);
            return None;
        }
        if used {
            session.last_seen = now;
        }
        Some(session.clone())
    }

    /// Sign-out.
    pub fn end(&self, token: &str) {
        self.held
            .lock()
            .expect("the session map is never poisoned")
            .remove(&digest(token));
    }

    /// Sessions held now (ended ones may linger until the next sign-in).
    pub fn len(&self) -> usize {
        self.held.lock().expect("the session map is never poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn evict_least_recent(held: &mut HashMap<[u8; 32], Session>, among: impl Fn(&Session) -> bool) {
    let oldest = held
        .iter()
        .filter(|(_, s)| among(s))
        .min_by_key(|(_, s)| s.last_seen)
        .map(|(k, _)| *k);
    if let Some(key) = oldest {
        held.remove(&key);
    }
}

fn live(session: &Session, limits: DashboardLimits, now: Timestamp) -> bool {
    let within = |since: Timestamp, span: Duration| since.saturating_add(span).is_ok_and(|end| now < end);
    within(session.last_seen, limits.idle) && within(session.created_at, limits.lifetime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    const LIMITS: DashboardLimits = DashboardLimits {
        idle: Duration::from_secs(60),
        lifetime: Duration::from_secs(300),
        max_sessions: 2,
        query_time_limit: Duration::from_secs(1),
        refresh_every: Duration::from_secs(5),
    };

    #[test]
    fn sessions_end_when_idle_at_their_lifetime_at_sign_out_and_when_crowded_out() {
        let sessions = Sessions::default();
        sessions.start("k1".into(), "t1".into(), "c1".into(), LIMITS, at(0));
        assert_eq!(sessions.touch("t1", LIMITS, at(59), true).unwrap().csrf, "c1");
        assert!(sessions.touch("nope", LIMITS, at(59), true).is_none());
        // Used every 50 s: idle never ends it, the lifetime does.
        for t in (109..300).step_by(50) {
            assert!(sessions.touch("t1", LIMITS, at(t), true).is_some(), "{t}");
        }
        assert!(sessions.touch("t1", LIMITS, at(300), true).is_none());

        sessions.start("k2".into(), "t2".into(), "c2".into(), LIMITS, at(400));
        assert!(sessions.touch("t2", LIMITS, at(460), true).is_none(), "idle for 60 s");

        sessions.start("k3".into(), "t3".into(), "c3".into(), LIMITS, at(500));
        sessions.start("k4".into(), "t4".into(), "c4".into(), LIMITS, at(501));
        sessions.touch("t3", LIMITS, at(502), true);
        sessions.start("k5".into(), "t5".into(), "c5".into(), LIMITS, at(503));
        assert!(
            sessions.touch("t4", LIMITS, at(504), true).is_none(),
            "the least recently used went"
        );
        assert!(sessions.touch("t3", LIMITS, at(504), true).is_some());
        sessions.end("t3");
        assert!(sessions.touch("t3", LIMITS, at(505), true).is_none());
    }

    #[test]
    fn polling_does_not_keep_a_session_alive_and_a_key_crowds_out_only_itself() {
        let sessions = Sessions::default();
        sessions.start("k1".into(), "t1".into(), "c1".into(), LIMITS, at(0));
        assert!(sessions.touch("t1", LIMITS, at(50), false).is_some());
        assert!(
            sessions.touch("t1", LIMITS, at(60), false).is_none(),
            "polls are not use"
        );

        let wide = DashboardLimits {
            max_sessions: 1000,
            ..LIMITS
        };
        sessions.start("other".into(), "o".into(), "c".into(), wide, at(100));
        for n in 0..=MAX_SESSIONS_PER_KEY {
            sessions.start("busy".into(), format!("b{n}"), "c".into(), wide, at(101 + n as i64));
        }
        assert!(
            sessions.touch("b0", wide, at(130), true).is_none(),
            "its own oldest went"
        );
        assert!(
            sessions.touch("o", wide, at(130), true).is_some(),
            "another key's stayed"
        );
    }

    #[test]
    fn tokens_carry_256_bits() {
        let mut n = 0u64;
        let token = token(|| {
            n += 1;
            n
        });
        assert_eq!(token.len(), 43);
    }
}
