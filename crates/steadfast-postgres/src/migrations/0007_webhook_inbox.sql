-- Schema 7: the webhook inbox. A source is where one provider delivers;
-- an event is one verified delivery, kept with its exact bytes, and the
-- job it became. A dedup key (the event id, and the body's hash where the
-- provider does not sign its id) claims an event until its window ends.
CREATE TABLE sources (
    id               text PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (tenant_id),
    name             text NOT NULL,
    kind             text NOT NULL,
    queue            text NOT NULL,
    config           text NOT NULL,
    tolerance_ms     bigint NOT NULL,
    dedup_window_ms  bigint NOT NULL,
    created_at       bigint NOT NULL,
    deleted_at       bigint
);
CREATE UNIQUE INDEX sources_by_name ON sources (tenant_id, name) WHERE deleted_at IS NULL;

CREATE TABLE source_secrets (
    source_id   text NOT NULL REFERENCES sources (id),
    id          text NOT NULL,
    tenant_id   uuid NOT NULL,
    secret      text NOT NULL,
    created_at  bigint NOT NULL,
    expires_at  bigint,
    PRIMARY KEY (source_id, id)
);

CREATE TABLE inbox_events (
    seq                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id          uuid NOT NULL,
    source_id          text NOT NULL,
    event_id           text NOT NULL,
    received_at        bigint NOT NULL,
    body               bytea NOT NULL,
    body_sha256        text NOT NULL,
    body_bytes         bigint NOT NULL,
    headers            text NOT NULL,
    verification       text NOT NULL,
    secret_id          text NOT NULL,
    duplicates         bigint NOT NULL DEFAULT 0,
    last_duplicate_at  bigint,
    job_id             uuid NOT NULL,
    keys_expire_at     bigint NOT NULL
);
CREATE INDEX inbox_events_by_source ON inbox_events (tenant_id, source_id, seq);
CREATE INDEX inbox_events_by_event_id ON inbox_events (tenant_id, source_id, event_id, seq);
CREATE INDEX inbox_events_by_expiry ON inbox_events (keys_expire_at);

CREATE TABLE inbox_keys (
    source_id   text NOT NULL,
    key         text NOT NULL,
    tenant_id   uuid NOT NULL,
    event_seq   bigint NOT NULL,
    expires_at  bigint NOT NULL,
    PRIMARY KEY (source_id, key)
);
CREATE INDEX inbox_keys_by_event ON inbox_keys (event_seq);

-- Every job an event became: the delivery's, then each replay's.
CREATE TABLE inbox_jobs (
    tenant_id  uuid NOT NULL,
    job_id     uuid NOT NULL,
    event_seq  bigint NOT NULL,
    replay     boolean NOT NULL,
    linked     bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (tenant_id, job_id)
);
CREATE INDEX inbox_jobs_by_event ON inbox_jobs (event_seq);

DO $$
DECLARE
    tenant_table text;
BEGIN
    FOREACH tenant_table IN ARRAY ARRAY['sources', 'source_secrets', 'inbox_events', 'inbox_keys', 'inbox_jobs']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', tenant_table);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', tenant_table);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (tenant_id = steadfast_tenant() OR current_user = %L) '
            'WITH CHECK (tenant_id = steadfast_tenant() OR current_user = %L)',
            tenant_table, current_user, current_user);
    END LOOP;
END
$$;

-- A delivery: its source by the unguessable id in the URL, before the
-- tenant is known. Everything the delivery stores is then written inside
-- that source's tenant.
CREATE FUNCTION steadfast_find_source(p_id text)
    RETURNS TABLE (id text, tenant_id uuid, name text, kind text, queue text, config text, tolerance_ms bigint,
                   dedup_window_ms bigint, created_at bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        SELECT id, tenant_id, name, kind, queue, config, tolerance_ms, dedup_window_ms, created_at
        FROM sources WHERE id = p_id AND deleted_at IS NULL
    $$;

CREATE FUNCTION steadfast_source_secrets(p_id text)
    RETURNS TABLE (id text, secret text, created_at bigint, expires_at bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        SELECT s.id, s.secret, s.created_at, s.expires_at FROM source_secrets s
        JOIN sources src ON src.id = s.source_id AND src.deleted_at IS NULL
        WHERE s.source_id = p_id ORDER BY s.created_at, s.id
    $$;

-- Retention, across tenants: events whose dedup window ended, with their
-- keys and job links, oldest first.
CREATE FUNCTION steadfast_prune_inbox(p_before bigint, p_limit integer)
    RETURNS integer
    LANGUAGE sql SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        WITH pruned AS (
            SELECT seq FROM inbox_events WHERE keys_expire_at < p_before
            ORDER BY keys_expire_at LIMIT p_limit FOR UPDATE SKIP LOCKED
        ),
        gone_keys AS (DELETE FROM inbox_keys WHERE event_seq IN (SELECT seq FROM pruned)),
        gone_links AS (DELETE FROM inbox_jobs WHERE event_seq IN (SELECT seq FROM pruned)),
        gone AS (DELETE FROM inbox_events WHERE seq IN (SELECT seq FROM pruned) RETURNING 1)
        SELECT count(*)::integer FROM gone
    $$;

-- Cached generic plans of the inbox's statements follow its tables' growth
-- like those of the jobs tables (0003): without this, plans made while the
-- tables were empty scan them on every delivery.
CREATE OR REPLACE FUNCTION steadfast_refresh_statistics()
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
          AND s.relname IN ('jobs', 'attempts', 'steps', 'signals', 'idempotency_keys', 'audit_records',
                            'inbox_events', 'inbox_keys', 'inbox_jobs')
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
