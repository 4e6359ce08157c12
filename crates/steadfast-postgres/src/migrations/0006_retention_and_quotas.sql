-- Schema 6: what a tenant keeps. A tenant may have its own request rate
-- per key and cap on unfinished jobs; a queue may keep finished jobs for
-- its own time. NULL means the server's default.
ALTER TABLE tenants
    ADD COLUMN key_rate_limit integer,
    ADD COLUMN key_rate_burst integer,
    ADD COLUMN max_unfinished_jobs bigint;

CREATE TABLE queue_settings (
    tenant_id            uuid NOT NULL REFERENCES tenants (tenant_id),
    queue                text NOT NULL,
    retain_succeeded_ms  bigint,
    retain_failed_ms     bigint,
    updated_at           bigint NOT NULL,
    PRIMARY KEY (tenant_id, queue)
);

DO $$
BEGIN
    ALTER TABLE queue_settings ENABLE ROW LEVEL SECURITY;
    ALTER TABLE queue_settings FORCE ROW LEVEL SECURITY;
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON queue_settings USING (tenant_id = steadfast_tenant() OR current_user = %L) '
        'WITH CHECK (tenant_id = steadfast_tenant() OR current_user = %L)',
        current_user, current_user);
END
$$;

-- Local operators: a tenant's own limits.
CREATE FUNCTION steadfast_set_tenant_limits(p_tenant uuid, p_rate integer, p_burst integer, p_max bigint)
    RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        WITH updated AS (
            UPDATE tenants SET key_rate_limit = p_rate, key_rate_burst = p_burst, max_unfinished_jobs = p_max
            WHERE tenant_id = p_tenant RETURNING 1
        )
        SELECT count(*) > 0 FROM updated
    $$;

-- The engine's caches, across tenants.
CREATE FUNCTION steadfast_tenant_limits()
    RETURNS TABLE (tenant_id uuid, key_rate_limit integer, key_rate_burst integer, max_unfinished_jobs bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        SELECT tenant_id, key_rate_limit, key_rate_burst, max_unfinished_jobs FROM tenants
        WHERE key_rate_limit IS NOT NULL OR max_unfinished_jobs IS NOT NULL
    $$;

CREATE FUNCTION steadfast_unfinished_counts()
    RETURNS TABLE (tenant_id uuid, unfinished bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        SELECT tenant_id, count(*) FROM jobs
        WHERE state IN ('scheduled', 'queued', 'running', 'waiting') GROUP BY tenant_id
    $$;

-- Retention, across tenants: the queues with their own, the (tenant,
-- queue) pairs that hold jobs (a loose index scan of jobs_by_queue: one
-- seek per pair), and one bounded batch of a queue's expired finished jobs
-- removed with everything that hangs off them.
CREATE FUNCTION steadfast_queue_retentions()
    RETURNS TABLE (tenant_id uuid, queue text, retain_succeeded_ms bigint, retain_failed_ms bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        SELECT tenant_id, queue, retain_succeeded_ms, retain_failed_ms FROM queue_settings
        WHERE retain_succeeded_ms IS NOT NULL OR retain_failed_ms IS NOT NULL
    $$;

CREATE FUNCTION steadfast_job_queues()
    RETURNS TABLE (tenant_id uuid, queue text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        WITH RECURSIVE pairs (tenant_id, queue) AS (
            (SELECT j.tenant_id, j.queue FROM jobs j ORDER BY j.tenant_id, j.queue LIMIT 1)
            UNION ALL
            SELECT next.tenant_id, next.queue FROM pairs p, LATERAL (
                SELECT j.tenant_id, j.queue FROM jobs j
                WHERE (j.tenant_id, j.queue) > (p.tenant_id, p.queue)
                ORDER BY j.tenant_id, j.queue LIMIT 1
            ) next
        )
        SELECT tenant_id, queue FROM pairs
    $$;

-- Kept past their cutoff: a child whose parent is still there (the parent
-- may run its step again, even after an operator's retry, and must find
-- the same child), and a job whose idempotency key is still live (a retry
-- with the key must get the same job).
CREATE FUNCTION steadfast_prune_jobs(p_tenant uuid, p_queue text, p_succeeded_before bigint,
                                     p_failed_before bigint, p_limit integer, p_now bigint)
    RETURNS integer
    LANGUAGE sql SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        WITH pruned AS (
            SELECT j.id, j.idempotency_key FROM jobs j
            WHERE j.tenant_id = p_tenant AND j.queue = p_queue AND j.finished_at IS NOT NULL
              AND ((j.state = 'succeeded' AND j.finished_at < p_succeeded_before)
                   OR (j.state IN ('dead', 'cancelled') AND j.finished_at < p_failed_before))
              AND NOT EXISTS (SELECT 1 FROM jobs p WHERE p.tenant_id = j.tenant_id AND p.id = j.parent_id)
              AND NOT EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.tenant_id = j.tenant_id
                              AND k.key = j.idempotency_key AND k.job_id = j.id AND k.expires_at > p_now)
            ORDER BY j.finished_at LIMIT p_limit
            FOR UPDATE OF j SKIP LOCKED
        ),
        gone_attempts AS (DELETE FROM attempts WHERE tenant_id = p_tenant AND job_id IN (SELECT id FROM pruned)),
        gone_steps AS (DELETE FROM steps WHERE tenant_id = p_tenant AND job_id IN (SELECT id FROM pruned)),
        gone_signals AS (DELETE FROM signals WHERE tenant_id = p_tenant AND job_id IN (SELECT id FROM pruned)),
        gone_keys AS (
            DELETE FROM idempotency_keys k USING pruned p
            WHERE k.tenant_id = p_tenant AND k.key = p.idempotency_key AND k.job_id = p.id
        ),
        gone_jobs AS (DELETE FROM jobs WHERE tenant_id = p_tenant AND id IN (SELECT id FROM pruned) RETURNING 1)
        SELECT count(*)::integer FROM gone_jobs
    $$;
