-- Audit records from this schema on are stored one row per command and
-- tenant (a batch; a sweep that changes several tenants' jobs in turn
-- writes one per run of a tenant): a job's life wrote three rows and six index entries
-- for its records, the largest share of the writer's time. Each record
-- keeps its own hash and its place in the chain, so verification still
-- names the one record that was edited, removed or moved. Records written
-- before stay in audit_records, unchanged; reads join both, and the chain
-- runs on from the last of them.
CREATE TABLE audit_batches (
    id            INTEGER PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    first_seq     INTEGER NOT NULL,
    last_seq      INTEGER NOT NULL,
    at            INTEGER NOT NULL,
    actor_kind    TEXT NOT NULL,
    actor_key_id  TEXT,
    actor_name    TEXT NOT NULL,
    request_id    TEXT,
    -- A JSON array in chain order, one object per record:
    -- {"seq", "action", "target", "job_id", "summary" (JSON text, as a
    -- string), "prev_hash", "hash" (hex)}. The batch's columns above are
    -- the rest of each record.
    records       TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX audit_batches_by_seq ON audit_batches (tenant_id, first_seq);
CREATE INDEX audit_batches_by_time ON audit_batches (tenant_id, at, first_seq);

-- Lineage: which records of a batch name each job.
CREATE TABLE audit_job_records (
    tenant_id  TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, job_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER audit_batches_append_only_update BEFORE UPDATE ON audit_batches
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;
CREATE TRIGGER audit_batches_append_only_delete BEFORE DELETE ON audit_batches
WHEN NOT EXISTS (
    SELECT 1 FROM audit_prune_permits p WHERE p.tenant_id = OLD.tenant_id AND OLD.last_seq <= p.through_seq
)
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;
CREATE TRIGGER audit_job_records_append_only_update BEFORE UPDATE ON audit_job_records
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;
CREATE TRIGGER audit_job_records_append_only_delete BEFORE DELETE ON audit_job_records
WHEN NOT EXISTS (
    SELECT 1 FROM audit_prune_permits p WHERE p.tenant_id = OLD.tenant_id AND OLD.seq <= p.through_seq
)
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;
