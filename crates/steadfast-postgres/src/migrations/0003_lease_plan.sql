-- The heads of a queue, locked for a lease, in lease order.
--
-- Inline, this query's plan depended on statistics: with a table analysed
-- while nearly empty (a new deployment, a burst into a new queue) the
-- planner estimated one matching row and read the queue through
-- jobs_by_queue, sorting every job of the queue on each lease: 40-70 ms per
-- lease of 270 jobs with 20,000 queued, against 1 ms through jobs_ready
-- (EXPLAIN ANALYZE during a drain; BENCHMARKS.md, "Storage round 2 (issue
-- 12), second session"). With sorting priced out for this one statement,
-- the only ordered path left is jobs_ready, whatever the statistics say.
--
-- PL/pgSQL rather than SQL so the plan is cached per connection (a SQL
-- function with a SET clause is planned on every call). SECURITY INVOKER:
-- row-level security applies as for the inline query.
CREATE FUNCTION steadfast_queue_heads(p_tenant uuid, p_queue text, p_limit bigint)
    RETURNS SETOF jobs
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET enable_sort = off
    SET search_path = steadfast, pg_temp
    AS $$
    BEGIN
        RETURN QUERY
            SELECT * FROM jobs
            WHERE tenant_id = p_tenant AND queue = p_queue AND state = 'queued'
            ORDER BY priority DESC, run_at, seq
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED;
    END
    $$;
