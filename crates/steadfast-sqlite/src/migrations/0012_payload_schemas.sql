-- Schema 12: versioned payload schemas. A queue's versions are immutable
-- once registered; a job records the version its payload was validated
-- against.
ALTER TABLE jobs ADD COLUMN schema_version INTEGER;

CREATE TABLE queue_schemas (
    tenant_id      TEXT NOT NULL,
    queue          TEXT NOT NULL,
    version        INTEGER NOT NULL,
    schema         TEXT NOT NULL,           -- JSON Schema (draft 2020-12) of payloads
    output_schema  TEXT,                    -- JSON Schema of outputs, if any
    forced         INTEGER NOT NULL,        -- registered despite breaking changes
    reason         TEXT,                    -- why, when forced
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, queue, version)
) STRICT, WITHOUT ROWID;
