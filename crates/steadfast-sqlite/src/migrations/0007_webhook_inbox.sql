-- Schema 7: the webhook inbox. A source is where one provider delivers;
-- an event is one verified delivery, kept with its exact bytes, and the
-- job it became. A dedup key (the event id, and the body's hash where the
-- provider does not sign its id) claims an event until its window ends.
CREATE TABLE sources (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    name             TEXT NOT NULL,
    kind             TEXT NOT NULL,
    queue            TEXT NOT NULL,
    config           TEXT NOT NULL,
    tolerance_ms     INTEGER NOT NULL,
    dedup_window_ms  INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    deleted_at       INTEGER
) STRICT, WITHOUT ROWID;
CREATE UNIQUE INDEX sources_by_name ON sources (tenant_id, name) WHERE deleted_at IS NULL;

CREATE TABLE source_secrets (
    source_id   TEXT NOT NULL,
    id          TEXT NOT NULL,
    tenant_id   TEXT NOT NULL,
    secret      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    PRIMARY KEY (source_id, id)
) STRICT, WITHOUT ROWID;

CREATE TABLE inbox_events (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id          TEXT NOT NULL,
    source_id          TEXT NOT NULL,
    event_id           TEXT NOT NULL,
    received_at        INTEGER NOT NULL,
    body               BLOB NOT NULL,
    body_sha256        TEXT NOT NULL,
    body_bytes         INTEGER NOT NULL,
    headers            TEXT NOT NULL,
    verification       TEXT NOT NULL,
    secret_id          TEXT NOT NULL,
    duplicates         INTEGER NOT NULL DEFAULT 0,
    last_duplicate_at  INTEGER,
    job_id             TEXT NOT NULL,
    keys_expire_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX inbox_events_by_source ON inbox_events (tenant_id, source_id, seq);
CREATE INDEX inbox_events_by_event_id ON inbox_events (tenant_id, source_id, event_id, seq);
CREATE INDEX inbox_events_by_expiry ON inbox_events (keys_expire_at);

CREATE TABLE inbox_keys (
    source_id   TEXT NOT NULL,
    key         TEXT NOT NULL,
    tenant_id   TEXT NOT NULL,
    event_seq   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (source_id, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX inbox_keys_by_event ON inbox_keys (event_seq);

-- Every job an event became: the delivery's, then each replay's (in
-- rowid order).
CREATE TABLE inbox_jobs (
    tenant_id  TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    event_seq  INTEGER NOT NULL,
    replay     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, job_id)
) STRICT;
CREATE INDEX inbox_jobs_by_event ON inbox_jobs (event_seq);
