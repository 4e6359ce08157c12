//! Authentication's side effects, kept off the request's critical path
//! and bounded: a key's last use is written at most once per
//! [`LAST_USED_RESOLUTION`] by this node (and, by the store's condition,
//! once across nodes).

use std::collections::HashMap;
use std::sync::Mutex;

use steadfast_core::{ApiKeySecret, KeyId, Timestamp};
use steadfast_store::auth::{self, AuthFailure};
use steadfast_store::{LAST_USED_RESOLUTION, Principal};

use super::{AuthError, Engine};

/// Past this many keys noted, entries older than the resolution are dropped.
const NOTED_KEYS_BOUND: usize = 10_000;

/// When this node last noted each key's use.
#[derive(Debug, Default)]
pub(super) struct KeyUses {
    noted: Mutex<HashMap<KeyId, Timestamp>>,
}

impl KeyUses {
    /// Whether a use of `key` at `now` is to be written (and, if so, it is
    /// noted as written).
    fn due(&self, key: &KeyId, now: Timestamp) -> bool {
        let mut noted = self.noted.lock().expect("the key-use map is never poisoned");
        let fresh = |at: &Timestamp| now.duration_since(*at).unsigned_abs() < LAST_USED_RESOLUTION;
        if noted.get(key).is_some_and(fresh) {
            return false;
        }
        if noted.len() >= NOTED_KEYS_BOUND {
            noted.retain(|_, at| fresh(at));
        }
        noted.insert(key.clone(), now);
        true
    }
}

impl Engine {
    /// Resolves the bearer key of a request to its tenant and role.
    pub async fn authenticate(&self, presented: &str) -> Result<Principal, AuthError> {
        let secret = ApiKeySecret::parse(presented).map_err(|_| AuthFailure)?;
        let stored = self.inner.store.find_key(secret.key_id()).await?;
        let now = self.now();
        let principal = auth::authenticate(&secret, stored, now)?;
        self.note_key_use(&principal.key_id, now);
        Ok(principal)
    }

    /// Writes the key's last use in the background, when due.
    fn note_key_use(&self, key: &KeyId, now: Timestamp) {
        if !self.inner.key_uses.due(key, now) {
            return;
        }
        let store = self.inner.store.clone();
        let key = key.clone();
        tokio::spawn(async move {
            if let Err(error) = store.record_key_use(&key, now).await {
                tracing::warn!(%error, key_id = %key, "could not note the key's last use");
            }
        });
    }
}
