-- Schema 6: what a tenant keeps. A tenant may have its own request rate
-- per key and cap on unfinished jobs; a queue may keep finished jobs for
-- its own time. NULL means the server's default.
ALTER TABLE tenants ADD COLUMN key_rate_limit INTEGER;
ALTER TABLE tenants ADD COLUMN key_rate_burst INTEGER;
ALTER TABLE tenants ADD COLUMN max_unfinished_jobs INTEGER;

CREATE TABLE queue_settings (
    tenant_id            TEXT NOT NULL,
    queue                TEXT NOT NULL,
    retain_succeeded_ms  INTEGER,
    retain_failed_ms     INTEGER,
    updated_at           INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, queue)
) STRICT, WITHOUT ROWID;
