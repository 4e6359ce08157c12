-- Steadfast schema v1 (PostgreSQL). Runs as the owning role, in schema
-- `steadfast`. Times are Unix milliseconds, like the embedded store.
--
-- Tenant isolation: every tenant table carries tenant_id, has row-level
-- security enabled and FORCEd, and one policy: a row is visible and writable
-- only when its tenant_id equals the transaction-local setting
-- `steadfast.tenant_id`. Unset, nothing is visible. The only exception is the
-- owning role itself, which the application never connects as: it reaches
-- across tenants solely inside the narrow SECURITY DEFINER functions below.

CREATE FUNCTION steadfast_tenant() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('steadfast.tenant_id', true), '')::uuid $$;

CREATE TABLE tenants (
    tenant_id   uuid PRIMARY KEY,
    -- Chosen by operators, not tenants; unique across tenants by design.
    name        text NOT NULL UNIQUE,
    created_at  bigint NOT NULL
);

CREATE TABLE api_keys (
    tenant_id    uuid NOT NULL REFERENCES tenants (tenant_id),
    -- Random and server-chosen: looked up before the tenant is known.
    key_id       text NOT NULL UNIQUE,
    name         text NOT NULL,
    role         text NOT NULL,
    secret_hash  bytea NOT NULL,
    created_at   bigint NOT NULL,
    revoked_at   bigint,
    PRIMARY KEY (tenant_id, key_id)
);

CREATE TABLE jobs (
    tenant_id           uuid NOT NULL REFERENCES tenants (tenant_id),
    id                  uuid NOT NULL,
    seq                 bigint GENERATED ALWAYS AS IDENTITY,
    queue               text NOT NULL,
    payload             text NOT NULL,
    state               text NOT NULL,
    priority            integer NOT NULL,
    run_at              bigint NOT NULL,
    attempt             integer NOT NULL,
    uncounted_attempts  integer NOT NULL,
    max_attempts        integer NOT NULL,
    timeout_ms          bigint NOT NULL,
    idempotency_key     text,
    lease_token         text,
    lease_worker_id     text,
    lease_key_id        text,
    lease_started_at    bigint,
    lease_expires_at    bigint,
    lease_deadline      bigint,
    output              text,
    last_error_message  text,
    last_error_kind     text,
    created_at          bigint NOT NULL,
    updated_at          bigint NOT NULL,
    finished_at         bigint,
    wait_step           text,
    wait_signal         text,
    wait_until          bigint,
    parent_id           uuid,
    parent_step         text,
    traceparent         text,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX jobs_ready ON jobs (tenant_id, queue, priority DESC, run_at, seq) WHERE state = 'queued';
CREATE INDEX jobs_scheduled ON jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_waits ON jobs (wait_until) WHERE state = 'waiting';
CREATE INDEX jobs_by_tenant ON jobs (tenant_id, seq);
CREATE INDEX jobs_by_state ON jobs (tenant_id, state, seq);
CREATE INDEX jobs_by_queue ON jobs (tenant_id, queue, seq);
CREATE UNIQUE INDEX jobs_children ON jobs (tenant_id, parent_id, parent_step) WHERE parent_id IS NOT NULL;

CREATE TABLE attempts (
    tenant_id      uuid NOT NULL,
    job_id         uuid NOT NULL,
    number         integer NOT NULL,
    worker_id      text NOT NULL,
    key_id         text NOT NULL,
    started_at     bigint NOT NULL,
    ended_at       bigint NOT NULL,
    outcome        text NOT NULL,
    error_message  text,
    error_kind     text,
    PRIMARY KEY (tenant_id, job_id, number)
);

CREATE TABLE idempotency_keys (
    tenant_id    uuid NOT NULL,
    key          text NOT NULL,
    job_id       uuid NOT NULL,
    fingerprint  bytea NOT NULL,
    expires_at   bigint NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

CREATE TABLE steps (
    tenant_id     uuid NOT NULL,
    job_id        uuid NOT NULL,
    name          text NOT NULL,
    attempt       integer NOT NULL,
    started_at    bigint NOT NULL,
    completed_at  bigint,
    output        text,
    position      integer NOT NULL,
    PRIMARY KEY (tenant_id, job_id, name)
);

CREATE TABLE signals (
    tenant_id    uuid NOT NULL,
    job_id       uuid NOT NULL,
    seq          integer NOT NULL,
    name         text NOT NULL,
    payload      text NOT NULL,
    received_at  bigint NOT NULL,
    consumed_at  bigint,
    PRIMARY KEY (tenant_id, job_id, seq)
);
CREATE INDEX signals_pending ON signals (tenant_id, job_id, name, seq) WHERE consumed_at IS NULL;

-- The audit log: one hash chain per tenant (the nil tenant id holds the
-- system chain). The application may only read and append records; the
-- trigger refuses updates and deletes by anyone, the owner included, except
-- inside the retention function.
CREATE TABLE audit_records (
    tenant_id     uuid NOT NULL,
    seq           bigint NOT NULL,
    at            bigint NOT NULL,
    actor_kind    text NOT NULL,
    actor_key_id  text,
    actor_name    text NOT NULL,
    request_id    text,
    action        text NOT NULL,
    target        text NOT NULL,
    job_id        uuid,
    summary       text NOT NULL,
    prev_hash     bytea NOT NULL,
    hash          bytea NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_by_time ON audit_records (tenant_id, at, seq);
CREATE INDEX audit_by_job ON audit_records (tenant_id, job_id, seq) WHERE job_id IS NOT NULL;

-- Each chain's end. Appends lock it (FOR UPDATE), so a chain cannot fork
-- however many nodes write.
CREATE TABLE audit_heads (
    tenant_id  uuid PRIMARY KEY,
    seq        bigint NOT NULL,
    hash       bytea NOT NULL
);

-- Where a chain starts after retention pruned its prefix.
CREATE TABLE audit_bases (
    tenant_id  uuid PRIMARY KEY,
    seq        bigint NOT NULL,
    hash       bytea NOT NULL
);

-- Service level objectives, and what they count: finished jobs by queue and time.
CREATE TABLE slos (
    tenant_id     uuid NOT NULL,
    id            uuid NOT NULL,
    name          text NOT NULL,
    queue         text NOT NULL,
    kind          text NOT NULL,
    threshold_ms  bigint,
    objective     double precision NOT NULL,
    window_ms     bigint NOT NULL,
    notify_url    text,
    created_at    bigint NOT NULL,
    page_since    bigint,
    ticket_since  bigint,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);
CREATE INDEX jobs_finished ON jobs (tenant_id, queue, finished_at) WHERE finished_at IS NOT NULL;

DO $$
DECLARE
    tenant_table text;
BEGIN
    FOREACH tenant_table IN ARRAY ARRAY['tenants', 'api_keys', 'jobs', 'attempts', 'idempotency_keys', 'steps', 'signals',
                                        'audit_records', 'audit_heads', 'audit_bases', 'slos']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', tenant_table);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', tenant_table);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (tenant_id = steadfast_tenant() OR current_user = %L) '
            'WITH CHECK (tenant_id = steadfast_tenant() OR current_user = %L)',
            tenant_table, current_user, current_user);
    END LOOP;
    EXECUTE format(
        'CREATE FUNCTION audit_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $f$ '
        'BEGIN IF current_user <> %L OR current_setting(''steadfast.audit_prune'', true) IS DISTINCT FROM ''on'' THEN '
        'RAISE EXCEPTION ''audit records are append-only''; END IF; '
        'RETURN OLD; END $f$',
        current_user);
END
$$;
CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_records_append_only();

-- The only ways across tenants, each as narrow as its caller needs.

-- Authentication: a key by its public id, before the tenant is known.
CREATE FUNCTION steadfast_find_key(p_key_id text)
    RETURNS TABLE (key_id text, tenant_id uuid, role text, name text, secret_hash bytea, created_at bigint, revoked_at bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$ SELECT key_id, tenant_id, role, name, secret_hash, created_at, revoked_at FROM api_keys WHERE key_id = p_key_id $$;

-- Local operators: revoke a key by id; find and list tenants.
CREATE FUNCTION steadfast_revoke_key(p_key_id text, p_at bigint)
    RETURNS TABLE (key_id text, tenant_id uuid, role text, name text, created_at bigint, revoked_at bigint)
    LANGUAGE sql SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        UPDATE api_keys SET revoked_at = coalesce(revoked_at, p_at) WHERE key_id = p_key_id
        RETURNING key_id, tenant_id, role, name, created_at, revoked_at
    $$;

CREATE FUNCTION steadfast_tenants()
    RETURNS TABLE (tenant_id uuid, name text, created_at bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$ SELECT tenant_id, name, created_at FROM tenants ORDER BY name $$;

-- Background duties: the ids of due jobs, locked for this transaction and
-- skipped by every other node's sweep. The caller then acts on each job
-- inside its own tenant's scope.
CREATE FUNCTION steadfast_lock_due(p_kind text, p_now bigint, p_limit integer)
    RETURNS TABLE (tenant_id uuid, id uuid)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
    BEGIN
        IF p_kind = 'scheduled' THEN
            RETURN QUERY SELECT j.tenant_id, j.id FROM jobs j
                WHERE j.state = 'scheduled' AND j.run_at <= p_now ORDER BY j.run_at LIMIT p_limit FOR UPDATE SKIP LOCKED;
        ELSIF p_kind = 'waiting' THEN
            RETURN QUERY SELECT j.tenant_id, j.id FROM jobs j
                WHERE j.state = 'waiting' AND j.wait_until <= p_now ORDER BY j.wait_until LIMIT p_limit FOR UPDATE SKIP LOCKED;
        ELSIF p_kind = 'expired' THEN
            RETURN QUERY SELECT j.tenant_id, j.id FROM jobs j
                WHERE j.state = 'running' AND j.lease_expires_at <= p_now ORDER BY j.lease_expires_at LIMIT p_limit
                FOR UPDATE SKIP LOCKED;
        ELSE
            RAISE EXCEPTION 'unknown kind %', p_kind;
        END IF;
    END
    $$;

CREATE FUNCTION steadfast_next_due()
    RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        SELECT min(due) FROM (
            SELECT min(run_at) AS due FROM jobs WHERE state = 'scheduled'
            UNION ALL SELECT min(lease_expires_at) FROM jobs WHERE state = 'running'
            UNION ALL SELECT min(wait_until) FROM jobs WHERE state = 'waiting'
        ) AS due_times
    $$;

CREATE FUNCTION steadfast_prune_idempotency_keys(p_now bigint, p_limit integer)
    RETURNS integer
    LANGUAGE sql SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        WITH pruned AS (
            DELETE FROM idempotency_keys WHERE (tenant_id, key) IN (
                SELECT tenant_id, key FROM idempotency_keys WHERE expires_at <= p_now LIMIT p_limit FOR UPDATE SKIP LOCKED)
            RETURNING 1)
        SELECT count(*)::integer FROM pruned
    $$;

-- Retention: removes each chain's records older than p_before (at most
-- p_limit per chain), records where the remaining chain starts, and returns
-- per chain what was removed so the caller can append an `audit.pruned`
-- record in the same transaction.
CREATE FUNCTION steadfast_prune_audit(p_before bigint, p_limit integer)
    RETURNS TABLE (tenant_id uuid, through_seq bigint, hash bytea, removed integer)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
    #variable_conflict use_column
    DECLARE
        chain record;
        last_seq bigint;
        last_hash bytea;
        n integer;
    BEGIN
        -- The trigger lets the owner delete only while this is set, here.
        PERFORM set_config('steadfast.audit_prune', 'on', true);
        FOR chain IN SELECT DISTINCT r.tenant_id FROM audit_records r WHERE r.at < p_before ORDER BY r.tenant_id LOOP
            SELECT r.seq, r.hash INTO last_seq, last_hash FROM (
                SELECT a.seq, a.hash FROM audit_records a WHERE a.tenant_id = chain.tenant_id AND a.at < p_before
                ORDER BY a.seq LIMIT p_limit) r ORDER BY r.seq DESC LIMIT 1;
            DELETE FROM audit_records a WHERE a.tenant_id = chain.tenant_id AND a.seq <= last_seq;
            GET DIAGNOSTICS n = ROW_COUNT;
            INSERT INTO audit_bases AS b (tenant_id, seq, hash) VALUES (chain.tenant_id, last_seq, last_hash)
                ON CONFLICT ON CONSTRAINT audit_bases_pkey DO UPDATE SET seq = excluded.seq, hash = excluded.hash;
            tenant_id := chain.tenant_id; through_seq := last_seq; hash := last_hash; removed := n;
            RETURN NEXT;
        END LOOP;
        PERFORM set_config('steadfast.audit_prune', 'off', true);
    END
    $$;

-- Metrics: unfinished jobs by queue and state, across tenants (counts only).
CREATE FUNCTION steadfast_queue_stats()
    RETURNS TABLE (queue text, state text, jobs bigint, oldest_run_at bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        SELECT j.queue, j.state, count(*), min(j.run_at) FROM jobs j
        WHERE j.state IN ('scheduled', 'queued', 'running', 'waiting') GROUP BY j.queue, j.state
    $$;
