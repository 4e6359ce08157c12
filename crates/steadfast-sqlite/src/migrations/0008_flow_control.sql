-- Schema 8: flow control. A job may name the key its queue's per-key rules
-- count it under (flow_key), the downstream it calls (resource) and a
-- singleton key. A queue's policy is JSON beside its retention; what the
-- rules remember between leases (rate limiters' theoretical arrival times,
-- the fairness cursor, the retry budget's tokens) sits beside it, and is
-- written by the lease that changes it. Running counts are never stored:
-- they are read from the jobs themselves, so a lease that expires, a job
-- that is cancelled or completes, frees its slot in its own transaction.
ALTER TABLE jobs ADD COLUMN flow_key TEXT;
ALTER TABLE jobs ADD COLUMN resource TEXT;
ALTER TABLE jobs ADD COLUMN singleton_key TEXT;

-- Only jobs that carry a key or a resource pay for these indexes.
CREATE INDEX jobs_ready_keys ON jobs (tenant_id, queue, flow_key, priority DESC, run_at, seq)
    WHERE state = 'queued' AND flow_key IS NOT NULL;
CREATE INDEX jobs_running_keys ON jobs (tenant_id, queue, flow_key)
    WHERE state = 'running' AND flow_key IS NOT NULL;
CREATE INDEX jobs_running_resources ON jobs (tenant_id, resource)
    WHERE state = 'running' AND resource IS NOT NULL;
CREATE UNIQUE INDEX jobs_singletons ON jobs (tenant_id, queue, singleton_key)
    WHERE singleton_key IS NOT NULL AND state IN ('scheduled', 'queued', 'running', 'waiting');

ALTER TABLE queue_settings ADD COLUMN policy TEXT;             -- JSON; NULL: no rules
ALTER TABLE queue_settings ADD COLUMN rate_tat_ns INTEGER;     -- the queue rate's theoretical arrival time
ALTER TABLE queue_settings ADD COLUMN cursor_key TEXT;         -- fairness: the key being served ('' = jobs without one)
ALTER TABLE queue_settings ADD COLUMN cursor_served INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queue_settings ADD COLUMN budget_tokens REAL;      -- the retry budget's balance
ALTER TABLE queue_settings ADD COLUMN budget_at INTEGER;       -- when that balance was computed

-- The per-key rate limiter's theoretical arrival time, per key that was
-- granted recently; rows in the past mean nothing and are pruned.
CREATE TABLE flow_keys (
    tenant_id    TEXT NOT NULL,
    queue        TEXT NOT NULL,
    flow_key     TEXT NOT NULL,
    rate_tat_ns  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, queue, flow_key)
) STRICT, WITHOUT ROWID;

-- A downstream: its limits and breaker (config, JSON) and the breaker's state.
CREATE TABLE resources (
    tenant_id        TEXT NOT NULL,
    name             TEXT NOT NULL,
    config           TEXT NOT NULL,
    breaker_state    TEXT NOT NULL DEFAULT 'closed',
    window_started_at INTEGER NOT NULL,
    window_requests  INTEGER NOT NULL DEFAULT 0,
    window_failures  INTEGER NOT NULL DEFAULT 0,
    opened_at        INTEGER,
    probes_granted   INTEGER NOT NULL DEFAULT 0,
    rate_tat_ns      INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT, WITHOUT ROWID;
