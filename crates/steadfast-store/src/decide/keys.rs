//! API key lifecycle: when a key stops working, and what rotating one
//! writes. Both backends call these, and differ only in SQL.

use steadfast_core::audit::Draft;
use steadfast_core::{TenantId, Timestamp};

use crate::audit::drafts;
use crate::{ApiKeyInfo, NewApiKey, StoreError};

/// Whether a key is refused at `now`: revoked (possibly on a schedule) or
/// expired.
pub fn key_ended(revoked_at: Option<Timestamp>, expires_at: Option<Timestamp>, now: Timestamp) -> bool {
    revoked_at.is_some_and(|at| at <= now) || expires_at.is_some_and(|at| at <= now)
}

/// When a revocation at `at` takes effect on a key revoked at `current`:
/// the earlier of the two, so a revocation is never postponed.
pub fn revocation(current: Option<Timestamp>, at: Timestamp) -> Timestamp {
    current.map_or(at, |current| current.min(at))
}

/// A rotation of `old`: the new key's record, when the old one is revoked,
/// and the audit drafts for the old key's tenant.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The key to insert: the presented id and secret, the old key's role and name.
    pub insert: NewApiKey,
    pub new: ApiKeyInfo,
    pub old_revoked_at: Timestamp,
    pub audit: Vec<(TenantId, Draft)>,
}

/// Decides a rotation: refused for a key that no longer works; otherwise
/// `new` joins `old`'s tenant with `old`'s role and name (whatever `new`
/// was made with), and `old` is revoked at `revoke_at` (or earlier, if
/// already scheduled).
pub fn rotate_key(
    old: &ApiKeyInfo,
    new: &NewApiKey,
    revoke_at: Timestamp,
    now: Timestamp,
) -> Result<Rotation, StoreError> {
    if key_ended(old.revoked_at, old.expires_at, now) {
        return Err(StoreError::KeyNotActive);
    }
    let old_revoked_at = revocation(old.revoked_at, revoke_at);
    let created = drafts::key_created_with(
        &new.key_id,
        old.role.as_str(),
        &old.name,
        new.expires_at,
        Some(&old.key_id),
    );
    let rotated = drafts::key_rotated(&old.key_id, &new.key_id, old_revoked_at);
    Ok(Rotation {
        insert: NewApiKey {
            role: old.role,
            name: old.name.clone(),
            ..new.clone()
        },
        new: ApiKeyInfo {
            key_id: new.key_id.clone(),
            tenant_id: old.tenant_id,
            role: old.role,
            name: old.name.clone(),
            created_at: now,
            revoked_at: None,
            expires_at: new.expires_at,
            last_used_at: None,
        },
        old_revoked_at,
        audit: vec![(old.tenant_id, created), (old.tenant_id, rotated)],
    })
}
