//! Versioned schema migrations, tracked in SQLite's `user_version`.
//!
//! Each migration runs once, in order, in one transaction with the version
//! bump. Rule for future changes (expand/contract): a migration only adds
//! (tables, nullable columns, indexes); code stops using a column one release
//! before the migration that drops it, so an upgrade never needs downtime.

use rusqlite::Connection;

/// Migrations in order; the schema version is the number applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_durability_barrier.sql"),
    include_str!("migrations/0003_audit_batches.sql"),
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
];

/// The schema version this build expects.
pub const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the data was written by a newer Steadfast (schema {found}, this build knows {CURRENT_VERSION}); upgrade Steadfast"
    )]
    TooNew { found: i64 },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Brings the schema up to date.
pub fn migrate(conn: &mut Connection) -> Result<(), SchemaError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if found > CURRENT_VERSION {
        return Err(SchemaError::TooNew { found });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if now > index as i64 {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
