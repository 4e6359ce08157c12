-- Schema 8: flow control. A job may name the key its queue's per-key rules
-- count it under (flow_key), the downstream it calls (resource) and a
-- singleton key. A queue's policy is JSON beside its retention; what the
-- rules remember between leases (rate limiters' theoretical arrival times,
-- the fairness cursor, the retry budget's tokens) sits beside it, and is
-- written by the lease that changes it, which holds the queue_settings row
-- (FOR UPDATE) so nodes take turns. Running counts are never stored: they
-- are read from the jobs themselves, so a lease that expires, a job that
-- is cancelled or completes, frees its slot in its own transaction.
ALTER TABLE jobs
    ADD COLUMN flow_key text,
    ADD COLUMN resource text,
    ADD COLUMN singleton_key text;

-- Only jobs that carry a key or a resource pay for these indexes.
CREATE INDEX jobs_ready_keys ON jobs (tenant_id, queue, flow_key, priority DESC, run_at, seq)
    WHERE state = 'queued' AND flow_key IS NOT NULL;
CREATE INDEX jobs_running_keys ON jobs (tenant_id, queue, flow_key)
    WHERE state = 'running' AND flow_key IS NOT NULL;
CREATE INDEX jobs_running_resources ON jobs (tenant_id, resource)
    WHERE state = 'running' AND resource IS NOT NULL;
CREATE UNIQUE INDEX jobs_singletons ON jobs (tenant_id, queue, singleton_key)
    WHERE singleton_key IS NOT NULL AND state IN ('scheduled', 'queued', 'running', 'waiting');

ALTER TABLE queue_settings
    ADD COLUMN policy text,                 -- JSON; NULL: no rules
    ADD COLUMN rate_tat_ns bigint,          -- the queue rate's theoretical arrival time
    ADD COLUMN cursor_key text,             -- fairness: the key being served ('' = jobs without one)
    ADD COLUMN cursor_served integer NOT NULL DEFAULT 0,
    ADD COLUMN budget_tokens double precision,  -- the retry budget's balance
    ADD COLUMN budget_at bigint;            -- when that balance was computed

-- The per-key rate limiter's theoretical arrival time, per key that was
-- granted recently; rows in the past mean nothing and are pruned.
CREATE TABLE flow_keys (
    tenant_id    uuid NOT NULL REFERENCES tenants (tenant_id),
    queue        text NOT NULL,
    flow_key     text NOT NULL,
    rate_tat_ns  bigint NOT NULL,
    PRIMARY KEY (tenant_id, queue, flow_key)
);

-- A downstream: its limits and breaker (config, JSON) and the breaker's state.
CREATE TABLE resources (
    tenant_id         uuid NOT NULL REFERENCES tenants (tenant_id),
    name              text NOT NULL,
    config            text NOT NULL,
    breaker_state     text NOT NULL DEFAULT 'closed',
    window_started_at bigint NOT NULL,
    window_requests   integer NOT NULL DEFAULT 0,
    window_failures   integer NOT NULL DEFAULT 0,
    opened_at         bigint,
    probes_granted    integer NOT NULL DEFAULT 0,
    rate_tat_ns       bigint,
    created_at        bigint NOT NULL,
    updated_at        bigint NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['flow_keys', 'resources'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (tenant_id = steadfast_tenant() OR current_user = %L) '
            'WITH CHECK (tenant_id = steadfast_tenant() OR current_user = %L)',
            t, current_user, current_user);
    END LOOP;
END
$$;

-- The flow control gauges, across tenants: which tenants have a queue
-- policy or a resource (each then read in its own tenant's scope).
CREATE FUNCTION steadfast_flow_tenants(p_limit bigint)
    RETURNS TABLE (tenant_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        SELECT tenant_id FROM queue_settings WHERE policy IS NOT NULL
        UNION SELECT tenant_id FROM resources
        ORDER BY 1 LIMIT p_limit
    $$;

-- Per-key rate limiter states whose arrival time passed hold nothing
-- back: forgotten in bounded batches, across tenants.
CREATE FUNCTION steadfast_prune_flow_keys(p_now bigint, p_limit bigint)
    RETURNS bigint
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        WITH gone AS (
            DELETE FROM flow_keys WHERE (tenant_id, queue, flow_key) IN (
                SELECT tenant_id, queue, flow_key FROM flow_keys WHERE rate_tat_ns < p_now LIMIT p_limit
            ) RETURNING 1
        )
        SELECT count(*) FROM gone
    $$;
