//! Versioned migrations, the grants the application role gets, and the
//! checks `serve` makes before it runs.
//!
//! Upgrades follow expand/contract so they never need downtime: a migration
//! only adds (tables, nullable columns, indexes, functions); code stops using
//! a column in the release before the one whose migration drops it. Old nodes
//! keep working on the expanded schema while new nodes roll out. The one
//! exception is version 2 (`audit_intake`, before the first release): nodes of
//! the previous build must stop first (docs/postgres.md).

use tokio_postgres::Client;

/// The schema Steadfast's tables live in.
pub const SCHEMA: &str = "steadfast";

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_audit_intake.sql"),
    include_str!("migrations/0003_lease_plan.sql"),
    include_str!("migrations/0004_audit_signing_keys.sql"),
    include_str!("migrations/0005_key_lifecycle.sql"),
    include_str!("migrations/0006_retention_and_quotas.sql"),
    include_str!("migrations/0007_webhook_inbox.sql"),
    include_str!("migrations/0008_flow_control.sql"),
    include_str!("migrations/0009_operator_actions.sql"),
    include_str!("migrations/0010_dashboard.sql"),
    include_str!("migrations/0011_bulk_operations.sql"),
    include_str!("migrations/0012_payload_schemas.sql"),
    include_str!("migrations/0013_schedules.sql"),
    include_str!("migrations/0014_producers.sql"),
    include_str!("migrations/0015_transactional_enqueue.sql"),
];

/// The schema version this build expects.
pub const CURRENT_VERSION: i32 = MIGRATIONS.len() as i32;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the database has no Steadfast schema yet; create it as the owning role:\n  \
         steadfast migrate --database-url <owner url> --app-role <application role>"
    )]
    NotMigrated,
    #[error(
        "the database schema is at version {found}, this build needs {CURRENT_VERSION}; upgrade it as the owning role:\n  \
         steadfast migrate --database-url <owner url> --app-role <application role>"
    )]
    Outdated { found: i32 },
    #[error("the database schema (version {found}) is newer than this build ({CURRENT_VERSION}); upgrade Steadfast")]
    TooNew { found: i32 },
    #[error(
        "refusing to run as role {role:?}: it is {why}, so row-level security would not isolate tenants. \
         Connect as the application role that `steadfast migrate --app-role` granted (see docs/postgres.md)"
    )]
    PrivilegedRole { role: String, why: &'static str },
    #[error(
        "role {0:?} is (or is a member of) the application role or the owner: it already holds far more \
         than steadfast.enqueue. Give the application a role of its own (see docs/postgres.md)"
    )]
    EnqueueRoleHoldsMore(String),
    #[error("role {0:?} does not exist; create it first (see docs/postgres.md)")]
    UnknownRole(String),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
}

/// Quotes an identifier for SQL.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The role exists and is held to row-level security: neither a superuser
/// nor `BYPASSRLS`.
async fn check_unprivileged(client: &Client, role: &str) -> Result<(), SchemaError> {
    let found = client
        .query_opt(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1",
            &[&role],
        )
        .await?
        .ok_or_else(|| SchemaError::UnknownRole(role.to_owned()))?;
    let why = match (found.get::<_, bool>(0), found.get::<_, bool>(1)) {
        (true, _) => "a superuser",
        (false, true) => "BYPASSRLS",
        (false, false) => return Ok(()),
    };
    Err(SchemaError::PrivilegedRole {
        role: role.to_owned(),
        why,
    })
}

/// What `migrate` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: i32,
    pub to: i32,
}

/// Creates or upgrades the schema as the connected (owning) role and grants
/// `app_role` exactly what the server needs. Safe to run concurrently and repeatedly.
pub async fn migrate(client: &mut Client, app_role: &str) -> Result<Migrated, SchemaError> {
    check_unprivileged(client, app_role).await?;
    let tx = client.transaction().await?;
    let result = async {
        tx.execute("SELECT pg_advisory_xact_lock(hashtext('steadfast.migrate'))", &[])
            .await?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {SCHEMA}; SET LOCAL search_path TO {SCHEMA}; \
             CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        ))
        .await?;
        let from: i32 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])
            .await?
            .get(0);
        if from > CURRENT_VERSION {
            return Err(SchemaError::TooNew { found: from });
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&(index as i32 + 1)],
            )
            .await?;
        }
        let app = ident(app_role);
        tx.batch_execute(&format!(
            "GRANT USAGE ON SCHEMA {SCHEMA} TO {app};
             GRANT SELECT ON schema_migrations TO {app};
             GRANT SELECT, INSERT ON tenants, api_keys, attempts, audit_records, audit_signing_keys TO {app};
             GRANT SELECT, INSERT, UPDATE ON audit_heads TO {app};
             GRANT SELECT ON audit_bases TO {app};
             GRANT SELECT, INSERT, DELETE ON audit_intake TO {app};
             GRANT SELECT, INSERT, UPDATE, DELETE ON slos TO {app};
             GRANT SELECT, INSERT, UPDATE ON queue_settings TO {app};
             GRANT SELECT, INSERT, UPDATE ON sources, inbox_events, inbox_keys TO {app};
             GRANT SELECT, INSERT, UPDATE, DELETE ON source_secrets TO {app};
             GRANT SELECT, INSERT ON inbox_jobs TO {app};
             GRANT SELECT, INSERT, UPDATE, DELETE ON flow_keys, resources TO {app};
             GRANT SELECT, INSERT, UPDATE ON jobs, idempotency_keys, signals TO {app};
             GRANT SELECT, INSERT, UPDATE, DELETE ON steps TO {app};
             GRANT SELECT, INSERT, UPDATE, DELETE ON bulk_operations TO {app};
             GRANT SELECT, INSERT ON queue_schemas TO {app};
             GRANT SELECT, INSERT, UPDATE, DELETE ON schedules TO {app};
             GRANT SELECT, INSERT, UPDATE ON producers TO {app};
             GRANT SELECT, UPDATE, DELETE ON outbox TO {app};
             REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {SCHEMA} FROM PUBLIC;
             GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {SCHEMA} TO {app};"
        ))
        .await?;
        Ok(from)
    }
    .await;
    let from = crate::finish(tx, result, SchemaError::from).await?;
    Ok(Migrated {
        from,
        to: CURRENT_VERSION,
    })
}

/// Lets `role` enqueue inside its own transactions, with
/// `steadfast.enqueue(api_key, queue, payload, options)`, and nothing else:
/// no table, no other function. Refused for privileged roles, like the
/// application role.
pub async fn grant_enqueue(client: &mut Client, role: &str, app_role: &str) -> Result<(), SchemaError> {
    check_unprivileged(client, role).await?;
    // A role that is (or is a member of) the application role or the owner
    // already holds far more than the function.
    let holds_more: bool = client
        .query_one(
            "SELECT pg_has_role($1, $2, 'MEMBER') OR pg_has_role($1, current_user, 'MEMBER')",
            &[&role, &app_role],
        )
        .await?
        .get(0);
    if holds_more {
        return Err(SchemaError::EnqueueRoleHoldsMore(role.to_owned()));
    }
    let role = ident(role);
    client
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA {SCHEMA} TO {role};
             GRANT EXECUTE ON FUNCTION {SCHEMA}.enqueue(text, text, jsonb, jsonb) TO {role};"
        ))
        .await?;
    Ok(())
}

/// What `serve` checks before it runs: the schema is current, and the
/// connected role is subject to row-level security.
pub async fn check(client: &Client) -> Result<(), SchemaError> {
    let me = client
        .query_one(
            "SELECT current_user::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?;
    let role: String = me.get(0);
    if me.get::<_, bool>(1) {
        return Err(SchemaError::PrivilegedRole {
            role,
            why: "a superuser",
        });
    }
    if me.get::<_, bool>(2) {
        return Err(SchemaError::PrivilegedRole { role, why: "BYPASSRLS" });
    }
    let owner = client
        .query_opt(
            "SELECT pg_has_role(current_user, tableowner, 'USAGE') FROM pg_tables WHERE schemaname = $1 AND tablename = 'jobs'",
            &[&SCHEMA],
        )
        .await?
        .ok_or(SchemaError::NotMigrated)?;
    if owner.get::<_, bool>(0) {
        return Err(SchemaError::PrivilegedRole {
            role,
            why: "the owner of the tables (or a member of it)",
        });
    }
    let found: i32 = client
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {SCHEMA}.schema_migrations"),
            &[],
        )
        .await?
        .get(0);
    match found {
        v if v < CURRENT_VERSION => Err(SchemaError::Outdated { found }),
        v if v > CURRENT_VERSION => Err(SchemaError::TooNew { found }),
        _ => Ok(()),
    }
}
