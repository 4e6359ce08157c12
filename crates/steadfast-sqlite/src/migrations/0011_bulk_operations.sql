-- Schema 11: bulk operations. One row per operation: what it was asked
-- (spec: action, filter, reason, the key that started it, as JSON), where
-- its walk of the jobs in seq order is (cursor_seq) and what it did. A
-- batch advances the cursor in the same transaction as the jobs it moved.
CREATE TABLE bulk_operations (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    spec          TEXT NOT NULL,
    status        TEXT NOT NULL,            -- running, completed, cancelled
    matched       INTEGER NOT NULL,
    done          INTEGER NOT NULL,
    failed        INTEGER NOT NULL,
    failures      TEXT NOT NULL,            -- JSON: the first failures
    through_seq   INTEGER NOT NULL,
    cursor_seq    INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    finished_at   INTEGER
) STRICT;
CREATE INDEX bulk_operations_by_tenant ON bulk_operations (tenant_id, created_at);
CREATE INDEX bulk_operations_running ON bulk_operations (created_at) WHERE status = 'running';
