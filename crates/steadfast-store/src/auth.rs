//! The only place a [`TenantScope`] is made.
//!
//! Rationale: tenant isolation must not depend on every handler remembering a
//! `WHERE tenant_id = ?`. Store methods take a scope, and the only ways to get
//! one are a verified API key ([`authenticate`]) or local operator access
//! ([`local_operator`]), or a webhook verified against its source's secret
//! ([`verified_webhook`]), so a handler without a credential has nothing to pass.

use steadfast_core::audit::Actor;
use steadfast_core::{ApiKeySecret, KeyId, Role, TenantId, Timestamp};

use crate::{StoredKey, Tenant};

/// Proof that the bearer may act within one tenant, and who the bearer is
/// (for the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantScope {
    tenant_id: TenantId,
    actor: Actor,
    request_id: Option<String>,
}

impl TenantScope {
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// The same scope, recording `request_id` in the audit records it causes.
    pub fn with_request_id(mut self, request_id: Option<String>) -> TenantScope {
        self.request_id = request_id;
        self
    }
}

/// Who is making a request: the tenant, the role and the key.
#[derive(Debug, Clone)]
pub struct Principal {
    pub scope: TenantScope,
    pub role: Role,
    pub key_id: KeyId,
    pub key_name: String,
}

/// Authentication failed. One variant on purpose: the API answers every
/// failure the same way, so a caller cannot tell unknown from revoked keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid, revoked or expired API key")]
pub struct AuthFailure;

/// Checks a presented key against what the store holds for its key id.
pub fn authenticate(
    presented: &ApiKeySecret,
    stored: Option<StoredKey>,
    now: Timestamp,
) -> Result<Principal, AuthFailure> {
    let stored = stored.ok_or(AuthFailure)?;
    let ended = crate::decide::key_ended(stored.revoked_at, stored.expires_at, now);
    if ended || stored.key_id != *presented.key_id() || !presented.matches(&stored.secret_hash) {
        return Err(AuthFailure);
    }
    let actor = Actor::Key {
        key_id: stored.key_id.clone(),
        name: stored.name.clone(),
    };
    Ok(Principal {
        scope: TenantScope {
            tenant_id: stored.tenant_id,
            actor,
            request_id: None,
        },
        role: stored.role,
        key_id: stored.key_id,
        key_name: stored.name,
    })
}

/// The scope of a webhook delivery whose signature verified against one
/// of `source`'s secrets: the source's tenant, recorded as the source.
/// Call it only after verification: the source's id alone proves nothing.
pub fn verified_webhook(source: &crate::Source) -> TenantScope {
    TenantScope {
        tenant_id: source.tenant_id,
        actor: Actor::Source {
            source_id: source.id.clone(),
        },
        request_id: None,
    }
}

/// The scope in which refused deliveries to `source` are recorded, in its
/// tenant, as Steadfast itself: the sender proved nothing.
pub fn refused_webhook(source: &crate::Source) -> TenantScope {
    TenantScope {
        tenant_id: source.tenant_id,
        actor: Actor::System,
        request_id: None,
    }
}

/// The scope in which Steadfast itself acts for a tenant (SLO evaluation,
/// notification delivery): recorded as the `system` actor.
pub fn system(tenant: &Tenant) -> TenantScope {
    TenantScope {
        tenant_id: tenant.id,
        actor: Actor::System,
        request_id: None,
    }
}

/// The scope in which a bulk operation goes on in the background after
/// the request that started it: its tenant, recorded as the key that
/// started it (whose role allowed it then).
pub fn bulk_operation(operation: &crate::bulk::BulkOperation) -> TenantScope {
    let actor = match KeyId::parse(&operation.spec.key_id) {
        Ok(key_id) => Actor::Key {
            key_id,
            name: operation.spec.key_name.clone(),
        },
        Err(_) => Actor::System,
    };
    TenantScope {
        tenant_id: operation.tenant_id,
        actor,
        request_id: None,
    }
}

/// The scope in which a request from the outbox (transactional enqueue)
/// is made a job: its tenant, recorded as the key it was sent with (which
/// the database checked when the application's transaction wrote it).
pub fn outbox_entry(tenant_id: TenantId, key_id: KeyId, key_name: String) -> TenantScope {
    TenantScope {
        tenant_id,
        actor: Actor::Key { key_id, name: key_name },
        request_id: None,
    }
}

/// [`system`] for a tenant known by id only (the engine's gauges).
pub fn system_for(tenant_id: TenantId) -> TenantScope {
    TenantScope {
        tenant_id,
        actor: Actor::System,
        request_id: None,
    }
}

/// The scope of a local operator: whoever can open the data directory (or
/// holds the database owner's credentials) already has every tenant's data,
/// so the CLI's administrative commands and the server's first start use this.
/// A local operator's scope on the system chain: the audit records no
/// tenant owns (unknown key ids, the deployment's signing keys).
pub fn system_chain_operator() -> TenantScope {
    TenantScope {
        tenant_id: crate::audit::SYSTEM_CHAIN,
        actor: Actor::Operator,
        request_id: None,
    }
}

pub fn local_operator(tenant: &Tenant) -> TenantScope {
    TenantScope {
        tenant_id: tenant.id,
        actor: Actor::Operator,
        request_id: None,
    }
}
