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


-- Statistics that keep up with the tables. Every statement runs on a
-- generic plan cached per connection, made from the statistics of the
-- moment; autovacuum refreshes them up to a minute late (once 50 rows and a
-- tenth of the table changed), and a plan made while the jobs table was
-- small walked a tenant's jobs for every batch update (5-41 ms for a few
-- jobs; BENCHMARKS.md, "Storage round 2 (issue 12), second session"), so
-- one producer at 200 jobs/s fell behind.
--
-- Each call analyses at most one table, the most overdue of those that
-- changed by as many rows as they hold (and at least 500) since their last
-- analysis, in its own transaction (an analysis rolled back with others
-- would leave its table looking fresh): the server calls it every second,
-- again while it returns 1. Each analysis makes every connection replan.
-- It skips a table someone else holds (autovacuum, DDL) rather than wait,
-- and tables past a million rows, where autovacuum's tenth comes first
-- anyway. audit_intake is left to autovacuum: rows pass through it, and its
-- statements are primary-key lookups. One node at a time; the others skip
-- the round. SECURITY DEFINER because only the owner may analyse; it takes
-- no argument, so the application cannot make it do more.
CREATE FUNCTION steadfast_refresh_statistics()
    RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = steadfast, pg_temp
    SET default_statistics_target FROM CURRENT
    AS $$
    DECLARE
        stale name;
    BEGIN
        IF NOT pg_try_advisory_xact_lock(hashtext('steadfast.refresh_statistics')) THEN
            RETURN 0;
        END IF;
        SELECT s.relname INTO stale
        FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
        WHERE s.schemaname = 'steadfast'
          AND s.relname IN ('jobs', 'attempts', 'steps', 'signals', 'idempotency_keys', 'audit_records')
          AND c.reltuples < 1000000
          AND s.n_mod_since_analyze > greatest(500, c.reltuples)
        ORDER BY s.n_mod_since_analyze / greatest(c.reltuples, 1) DESC
        LIMIT 1;
        IF stale IS NULL THEN
            RETURN 0;
        END IF;
        EXECUTE format('ANALYZE (SKIP_LOCKED) steadfast.%I', stale);
        RETURN 1;
    END
    $$;
