-- Schema 13: schedules. Each owes its next tick (next_fire_at, null while
-- paused); the duty finds the due ones through schedules_due.
CREATE TABLE schedules (
    tenant_id     TEXT NOT NULL,
    name          TEXT NOT NULL,
    cron          TEXT NOT NULL,
    timezone      TEXT NOT NULL,
    queue         TEXT NOT NULL,
    payload       TEXT NOT NULL,
    overlap       TEXT NOT NULL,            -- skip, allow
    catch_up      TEXT NOT NULL,            -- none, latest
    paused        INTEGER NOT NULL,
    next_fire_at  INTEGER,
    last_tick_at  INTEGER,
    last_outcome  TEXT,                     -- fired, skipped_overlap, missed, failed
    last_job_id   TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT, WITHOUT ROWID;
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;
