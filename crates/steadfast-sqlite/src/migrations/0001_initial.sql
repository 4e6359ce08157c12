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
    budget_start        INTEGER NOT NULL,
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
    finished_at         INTEGER
) STRICT;
-- Leasing reads the head of this index: no scan, however long the queue.
CREATE INDEX jobs_ready ON jobs (tenant_id, queue, priority DESC, run_at, seq) WHERE state = 'queued';
CREATE INDEX jobs_scheduled ON jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_by_tenant ON jobs (tenant_id, seq);
CREATE INDEX jobs_by_state ON jobs (tenant_id, state, seq);
CREATE INDEX jobs_by_queue ON jobs (tenant_id, queue, seq);

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
