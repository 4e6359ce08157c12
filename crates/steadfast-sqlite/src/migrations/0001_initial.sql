-- Steadfast schema v1 (SQLite). Times are Unix milliseconds; ids are text UUIDs.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE api_keys (
    key_id      TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id);

CREATE TABLE jobs (
    seq                 INTEGER PRIMARY KEY,  -- enqueue order: FIFO and list cursors
    id                  TEXT NOT NULL UNIQUE,
    tenant_id           TEXT NOT NULL,
    queue               TEXT NOT NULL,
    payload             TEXT NOT NULL,
    state               TEXT NOT NULL,
    priority            INTEGER NOT NULL,
    run_at              INTEGER NOT NULL,
    attempt             INTEGER NOT NULL,
    uncounted_attempts        INTEGER NOT NULL,
    max_attempts        INTEGER NOT NULL,
    timeout_ms          INTEGER NOT NULL,
    idempotency_key     TEXT,
    lease_token         TEXT,
    lease_worker_id     TEXT,
    lease_key_id        TEXT,
    lease_started_at    INTEGER,
    lease_expires_at    INTEGER,
    lease_deadline      INTEGER,
    output              TEXT,
    last_error_message  TEXT,
    last_error_kind     TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    finished_at         INTEGER,
    wait_step           TEXT,     -- set exactly while state = 'waiting'
    wait_signal         TEXT,     -- the awaited signal; NULL for a sleep
    wait_until          INTEGER,  -- wake-up time of a sleep, or a signal wait's deadline
    parent_id           TEXT,     -- the job whose step enqueued this one
    parent_step         TEXT,
    traceparent         TEXT      -- W3C trace context of the enqueue
) STRICT;
-- Leasing reads the head of this index: no scan, however long the queue.
CREATE INDEX jobs_ready ON jobs (tenant_id, queue, priority DESC, run_at, seq) WHERE state = 'queued';
CREATE INDEX jobs_scheduled ON jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_by_tenant ON jobs (tenant_id, seq);
CREATE INDEX jobs_by_state ON jobs (tenant_id, state, seq);
CREATE INDEX jobs_by_queue ON jobs (tenant_id, queue, seq);
CREATE INDEX jobs_waits ON jobs (wait_until) WHERE state = 'waiting';
-- One child per (parent, step): this is what makes spawning idempotent.
CREATE UNIQUE INDEX jobs_children ON jobs (tenant_id, parent_id, parent_step) WHERE parent_id IS NOT NULL;

CREATE TABLE attempts (
    job_id         TEXT NOT NULL,
    number         INTEGER NOT NULL,
    tenant_id      TEXT NOT NULL,
    worker_id      TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    started_at     INTEGER NOT NULL,
    ended_at       INTEGER NOT NULL,
    outcome        TEXT NOT NULL,
    error_message  TEXT,
    error_kind     TEXT,
    PRIMARY KEY (job_id, number)
) STRICT, WITHOUT ROWID;

CREATE TABLE idempotency_keys (
    tenant_id    TEXT NOT NULL,
    key          TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    fingerprint  BLOB NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

CREATE TABLE steps (
    job_id        TEXT NOT NULL,
    name          TEXT NOT NULL,
    tenant_id     TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    completed_at  INTEGER,           -- set once, never changed: the first checkpoint wins
    output        TEXT,
    position      INTEGER NOT NULL,  -- order of first record within the job
    PRIMARY KEY (job_id, name)
) STRICT, WITHOUT ROWID;

CREATE TABLE signals (
    job_id       TEXT NOT NULL,
    seq          INTEGER NOT NULL,   -- delivery order within the job
    tenant_id    TEXT NOT NULL,
    name         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    consumed_at  INTEGER,
    PRIMARY KEY (job_id, seq)
) STRICT, WITHOUT ROWID;
CREATE INDEX signals_pending ON signals (job_id, name, seq) WHERE consumed_at IS NULL;

-- The audit log: one hash chain per tenant (the nil tenant id holds the
-- system chain, e.g. failed authentications with unknown keys).
CREATE TABLE audit_records (
    tenant_id     TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    at            INTEGER NOT NULL,
    actor_kind    TEXT NOT NULL,
    actor_key_id  TEXT,
    actor_name    TEXT NOT NULL,
    request_id    TEXT,
    action        TEXT NOT NULL,
    target        TEXT NOT NULL,
    job_id        TEXT,
    summary       TEXT NOT NULL,
    prev_hash     BLOB NOT NULL,
    hash          BLOB NOT NULL,
    PRIMARY KEY (tenant_id, seq)
) STRICT, WITHOUT ROWID;
CREATE INDEX audit_by_time ON audit_records (tenant_id, at, seq);
CREATE INDEX audit_by_job ON audit_records (tenant_id, job_id, seq) WHERE job_id IS NOT NULL;

-- Each chain's end; appends read and advance it inside the writer's transaction.
CREATE TABLE audit_heads (
    tenant_id  TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    hash       BLOB NOT NULL
) STRICT;

-- Where a chain starts after retention pruned its prefix.
CREATE TABLE audit_bases (
    tenant_id  TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    hash       BLOB NOT NULL
) STRICT;

-- Retention's permission to delete a prefix, held only inside its transaction.
CREATE TABLE audit_prune_permits (
    tenant_id    TEXT PRIMARY KEY,
    through_seq  INTEGER NOT NULL
) STRICT;

CREATE TRIGGER audit_records_append_only_update BEFORE UPDATE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;
CREATE TRIGGER audit_records_append_only_delete BEFORE DELETE ON audit_records
WHEN NOT EXISTS (
    SELECT 1 FROM audit_prune_permits p WHERE p.tenant_id = OLD.tenant_id AND OLD.seq <= p.through_seq
)
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;

-- Service level objectives, and what they count: finished jobs by queue and time.
CREATE TABLE slos (
    tenant_id     TEXT NOT NULL,
    id            TEXT NOT NULL,
    name          TEXT NOT NULL,
    queue         TEXT NOT NULL,
    kind          TEXT NOT NULL,     -- success_ratio | latency
    threshold_ms  INTEGER,           -- latency only
    objective     REAL NOT NULL,
    window_ms     INTEGER NOT NULL,
    notify_url    TEXT,
    created_at    INTEGER NOT NULL,
    page_since    INTEGER,
    ticket_since  INTEGER,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
) STRICT;
CREATE INDEX jobs_finished ON jobs (tenant_id, queue, finished_at) WHERE finished_at IS NOT NULL;
