//! Roles and what each may do. One table, checked by the API layer before any
//! command reaches the engine.

use std::fmt;
use std::str::FromStr;

/// A key's role within its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything within the tenant, including operator actions.
    Admin,
    /// Enqueue, read, signal.
    Producer,
    /// Lease, heartbeat, checkpoint, complete, fail; read the jobs it leased.
    Worker,
    /// Read only.
    Reader,
}

/// Something a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Enqueue,
    ReadAnyJob,
    /// Reading a job this key has leased at some point.
    ReadLeasedJob,
    ListJobs,
    Lease,
    /// Heartbeat, complete, fail: acting on a lease this key holds.
    ActOnLease,
    /// Deliver a signal to a job (an approval, an external event).
    Signal,
    /// Read the audit log and its signed checkpoints.
    ReadAudit,
    /// Scrape `/metrics` (unless it is public).
    ReadMetrics,
    OperatorAction,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Producer, Role::Worker, Role::Reader];

    pub fn allows(self, action: Action) -> bool {
        use Action::*;
        match self {
            Role::Admin => true,
            Role::Producer => matches!(action, Enqueue | ReadAnyJob | ReadLeasedJob | ListJobs | Signal),
            Role::Worker => matches!(action, Lease | ActOnLease | ReadLeasedJob),
            Role::Reader => matches!(action, ReadAnyJob | ReadLeasedJob | ListJobs | ReadAudit | ReadMetrics),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Producer => "producer",
            Role::Worker => "worker",
            Role::Reader => "reader",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}; expected one of admin, producer, worker, reader")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_admin_may_act_as_operator_and_only_workers_and_admins_lease() {
        for role in Role::ALL {
            assert_eq!(role.allows(Action::OperatorAction), role == Role::Admin);
            assert_eq!(role.allows(Action::Lease), matches!(role, Role::Admin | Role::Worker));
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!(!Role::Worker.allows(Action::ReadAnyJob));
        assert!(!Role::Reader.allows(Action::Enqueue));
    }
}
