//! Authentication and its side effects, each bounded so that no request,
//! failed or not, costs a durable write of its own:
//! - a key's last use is written at most once per [`LAST_USED_RESOLUTION`]
//!   by this node (and, by the store's condition, once across nodes);
//! - failed authentications are counted here and written as one audit
//!   record per key (one for all unknown keys) per interval, with the
//!   busiest client addresses;
//! - each key's requests, and each address's failures, are rate-limited.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use steadfast_core::{ApiKeySecret, KeyId, Timestamp};
use steadfast_store::audit::AuthFailures;
use steadfast_store::auth::{self, AuthFailure};
use steadfast_store::{LAST_USED_RESOLUTION, Principal};

use super::rate_limits::Admission;
use super::{AuthError, Engine};

/// Distinct keys counted per interval; failures of further keys are
/// counted with the unknown ones.
const COUNTED_KEYS_BOUND: usize = 10_000;
/// Distinct addresses counted per key per interval; further ones are
/// only counted in all.
const ADDRESSES_PER_KEY_BOUND: usize = 1024;
/// Addresses named in each record, busiest first.
const LISTED_ADDRESSES: usize = 10;

/// A successful authentication, and where the key stands against its rate.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Principal,
    pub admission: Admission,
}

/// Failed authentications of one key (or of unknown keys) since the last record.
#[derive(Debug)]
struct FailureCount {
    count: u64,
    first_at: Timestamp,
    last_at: Timestamp,
    addresses: HashMap<IpAddr, u64>,
    other_addresses: u64,
}

/// Failed authentications since the last record, by key.
#[derive(Debug, Default)]
pub(super) struct FailedAuths {
    by_key: Mutex<HashMap<Option<KeyId>, FailureCount>>,
}

impl FailedAuths {
    fn count(&self, key: Option<KeyId>, client: Option<IpAddr>, now: Timestamp) {
        let mut by_key = self.by_key.lock().expect("the failure counts are never poisoned");
        let key = match key {
            Some(key) if by_key.len() >= COUNTED_KEYS_BOUND && !by_key.contains_key(&Some(key.clone())) => None,
            key => key,
        };
        let counted = by_key.entry(key).or_insert_with(|| FailureCount {
            count: 0,
            first_at: now,
            last_at: now,
            addresses: HashMap::new(),
            other_addresses: 0,
        });
        counted.count += 1;
        counted.last_at = now;
        match client {
            Some(client)
                if counted.addresses.contains_key(&client) || counted.addresses.len() < ADDRESSES_PER_KEY_BOUND =>
            {
                *counted.addresses.entry(client).or_default() += 1;
            }
            _ => counted.other_addresses += 1,
        }
    }

    /// Everything counted so far, as records; the counts start again.
    fn take(&self) -> Vec<AuthFailures> {
        let taken = std::mem::take(&mut *self.by_key.lock().expect("the failure counts are never poisoned"));
        taken
            .into_iter()
            .map(|(key_id, counted)| {
                let mut addresses: Vec<(IpAddr, u64)> = counted.addresses.into_iter().collect();
                addresses.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                let unlisted: u64 = addresses.iter().skip(LISTED_ADDRESSES).map(|(_, n)| n).sum();
                AuthFailures {
                    key_id,
                    count: counted.count,
                    first_at: counted.first_at,
                    last_at: counted.last_at,
                    addresses: addresses
                        .into_iter()
                        .take(LISTED_ADDRESSES)
                        .map(|(address, n)| (address.to_string(), n))
                        .collect(),
                    other_addresses: counted.other_addresses + unlisted,
                }
            })
            .collect()
    }
}

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
    /// Resolves the bearer key of a request from `client` to its tenant and
    /// role, within the key's rate. A failure is counted (for the audit log
    /// and the client's failure rate), never written on its own.
    pub async fn authenticate(&self, presented: &str, client: Option<IpAddr>) -> Result<Authenticated, AuthError> {
        let now = self.now();
        let Ok(secret) = ApiKeySecret::parse(presented) else {
            return Err(self.failed(None, client, now));
        };
        let stored = self.inner.store.find_key(secret.key_id()).await?;
        let known = stored.as_ref().map(|key| key.key_id.clone());
        let Ok(principal) = auth::authenticate(&secret, stored, now) else {
            return Err(self.failed(known, client, now));
        };
        let rate = self.key_rate(principal.scope.tenant_id());
        let admission = self.inner.limiters.admit_key(&principal.key_id, rate);
        if admission.limited {
            return Err(AuthError::RateLimited(admission));
        }
        self.note_key_use(&principal.key_id, now);
        Ok(Authenticated { principal, admission })
    }

    /// Counts a failed authentication of `key` (`None`: unknown or
    /// malformed) from `client`: refused, or rate-limited once the client
    /// has failed too often.
    fn failed(&self, key: Option<KeyId>, client: Option<IpAddr>, now: Timestamp) -> AuthError {
        self.inner.failed_auths.count(key, client, now);
        match client.map(|client| self.inner.limiters.admit_failure(client)) {
            Some(admission) if admission.limited => AuthError::RateLimited(admission),
            _ => AuthError::Rejected(AuthFailure),
        }
    }

    /// Writes the failed authentications counted since the last call: one
    /// audit record per key, and one for all unknown keys. Runs every
    /// [`AbuseLimits::auth_failure_record_every`](super::AbuseLimits).
    pub async fn record_auth_failures(&self) -> Result<usize, steadfast_store::StoreError> {
        let records = self.inner.failed_auths.take();
        let now = self.now();
        for failures in &records {
            self.inner.store.record_auth_failures(failures, now).await?;
        }
        Ok(records.len())
    }

    /// The duty behind failed authentications and rate limits: records the
    /// counts, and forgets idle limiter entries.
    pub(super) async fn auth_upkeep(&self) -> Result<(), steadfast_store::StoreError> {
        self.inner.limiters.forget_idle();
        self.record_auth_failures().await?;
        self.record_refused_deliveries().await.map(drop)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_key_is_due_for_a_write_once_a_minute() {
        let uses = KeyUses::default();
        let key = KeyId::from_random([3; 8]);
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let at = |secs: u64| t0.checked_add(Duration::from_secs(secs)).unwrap();
        assert!(uses.due(&key, t0));
        assert!(!uses.due(&key, at(1)));
        assert!(!uses.due(&key, at(59)));
        assert!(uses.due(&key, at(60)));
        assert!(uses.due(&KeyId::from_random([4; 8]), at(60)), "keys are apart");
    }
}
