-- Schema 15: transactional enqueue. An application that shares the
-- PostgreSQL server calls steadfast.enqueue(...) inside its own
-- transaction: the request lands in the outbox with that transaction, so a
-- rollback leaves nothing, and Steadfast's nodes then make the job from it
-- exactly as POST /v1/jobs would (validated, audited as the key, counted
-- against the quota, idempotency keys and all), the job's id being the one
-- the function returned.
CREATE TABLE outbox (
    tenant_id      uuid NOT NULL,
    id             uuid NOT NULL,            -- the job's id to be
    key_id         text NOT NULL,            -- the API key it was sent with
    request        text NOT NULL,            -- JSON, the shape of POST /v1/jobs
    idempotency_key text,                    -- its key (a producer's is derived)
    created_at     bigint NOT NULL,
    claimed_until  bigint,                   -- a node is making its job
    attempts       integer NOT NULL DEFAULT 0,
    failed_at      bigint,                   -- refused for good (error below)
    error_code     text,
    error_message  text,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX outbox_pending ON outbox (created_at) WHERE failed_at IS NULL;
-- Two transactions sending one key before either's job is made wait on
-- each other here, and the second gets the first's id.
CREATE UNIQUE INDEX outbox_idempotency ON outbox (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL AND failed_at IS NULL;

ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox FORCE ROW LEVEL SECURITY;
DO $$
BEGIN
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON outbox USING (tenant_id = steadfast_tenant() OR current_user = %L) '
        'WITH CHECK (tenant_id = steadfast_tenant() OR current_user = %L)',
        current_user, current_user);
END
$$;

-- The one thing an enqueue role may do. The key is checked as the HTTP API
-- checks it (its secret's SHA-256, not revoked, not expired, a role that
-- may enqueue); the request's shape is checked enough to fail inside the
-- caller's transaction; the rest (the queue's schema, bounds, the quota)
-- is the server's, when it makes the job.
CREATE FUNCTION enqueue(api_key text, queue text, payload jsonb, options jsonb DEFAULT '{}'::jsonb)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
DECLARE
    v_key      record;
    v_key_id   text;
    v_existing uuid;
    v_idem     text;
    v_now      bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    v_id       uuid;
    v_unknown  text;
    v_request  jsonb;
BEGIN
    IF api_key IS NULL OR api_key !~ '^sfk_[0-9a-f]{16}_[0-9a-f]{64}$' THEN
        RAISE EXCEPTION 'steadfast.enqueue: missing, unknown or revoked API key' USING ERRCODE = '28000';
    END IF;
    v_key_id := substr(api_key, 5, 16);
    SELECT k.tenant_id, k.role, k.secret_hash, k.revoked_at, k.expires_at INTO v_key
        FROM api_keys k WHERE k.key_id = v_key_id;
    IF NOT FOUND
        OR v_key.secret_hash <> sha256(decode(substr(api_key, 22), 'hex'))
        OR (v_key.revoked_at IS NOT NULL AND v_key.revoked_at <= v_now)
        OR (v_key.expires_at IS NOT NULL AND v_key.expires_at <= v_now) THEN
        RAISE EXCEPTION 'steadfast.enqueue: missing, unknown or revoked API key' USING ERRCODE = '28000';
    END IF;
    IF v_key.role NOT IN ('admin', 'producer') THEN
        RAISE EXCEPTION 'steadfast.enqueue: a % key may not enqueue', v_key.role USING ERRCODE = '42501';
    END IF;
    IF queue IS NULL OR queue !~ '^[A-Za-z0-9_.:-]{1,128}$' THEN
        RAISE EXCEPTION 'steadfast.enqueue: queue: 1-128 bytes of ASCII letters, digits and -_.:'
            USING ERRCODE = '22023';
    END IF;
    IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
        RAISE EXCEPTION 'steadfast.enqueue: options: a JSON object' USING ERRCODE = '22023';
    END IF;
    SELECT string_agg(name, ', ') INTO v_unknown FROM jsonb_object_keys(options) AS name
        WHERE name NOT IN ('idempotency_key', 'max_attempts', 'timeout_secs', 'run_at', 'priority', 'flow_key',
                           'resource', 'singleton', 'debounce_ms', 'debounce_max_ms', 'schema_version', 'producer');
    IF v_unknown IS NOT NULL THEN
        RAISE EXCEPTION 'steadfast.enqueue: options: unknown field %', v_unknown USING ERRCODE = '22023';
    END IF;
    IF options->>'idempotency_key' LIKE 'schedule:%' OR options->>'idempotency_key' LIKE 'producer:%' THEN
        RAISE EXCEPTION 'steadfast.enqueue: options: idempotency keys starting with schedule: or producer: are reserved'
            USING ERRCODE = '22023';
    END IF;
    v_idem := coalesce(options->>'idempotency_key',
        'producer:' || (options->'producer'->>'id') || ':' || (options->'producer'->>'sequence'));
    v_request := options || jsonb_build_object('queue', queue, 'payload', coalesce(payload, 'null'::jsonb));
    IF octet_length(v_request::text) > 1048576 THEN
        RAISE EXCEPTION 'steadfast.enqueue: the request is over 1 MiB' USING ERRCODE = '54000';
    END IF;
    -- A UUIDv7, like every job id: the time in milliseconds, then random bits.
    v_id := encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                PLACING substring(int8send(v_now) FROM 3) FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid;
    INSERT INTO outbox (tenant_id, id, key_id, request, idempotency_key, created_at)
        VALUES (v_key.tenant_id, v_id, v_key_id, v_request::text, v_idem, v_now)
        ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL AND failed_at IS NULL
        DO NOTHING;
    IF NOT FOUND THEN
        -- The key waits in the outbox already: its entry's id is the answer.
        SELECT o.id INTO v_existing FROM outbox o
            WHERE o.tenant_id = v_key.tenant_id AND o.idempotency_key = v_idem AND o.failed_at IS NULL;
        RETURN v_existing;
    END IF;
    -- A key a job already claims: that job is the answer, as POST /v1/jobs
    -- gives it (the entry is then a replay of it; one whose content
    -- differs is refused when its job is made).
    IF v_idem IS NOT NULL THEN
        SELECT i.job_id INTO v_existing FROM idempotency_keys i
            WHERE i.tenant_id = v_key.tenant_id AND i.key = v_idem AND i.expires_at > v_now;
        IF FOUND THEN
            RETURN v_existing;
        END IF;
    END IF;
    RETURN v_id;
END
$$;
REVOKE ALL ON FUNCTION enqueue(text, text, jsonb, jsonb) FROM PUBLIC;

-- The engine's duty claims pending entries across tenants, oldest first,
-- for `p_claim_ms` (each is then made a job in its own tenant's scope).
CREATE FUNCTION steadfast_claim_outbox(p_now bigint, p_claim_ms bigint, p_limit bigint)
    RETURNS TABLE (tenant_id uuid, id uuid, key_id text, request text, attempts integer)
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        -- Each claim of an entry lasts twice the last (at most an hour): one
        -- that waits on its tenant's quota is not taken up every 30 s forever.
        UPDATE outbox o SET claimed_until = p_now + least(p_claim_ms * power(2, least(o.attempts, 10))::bigint, 3600000),
            attempts = o.attempts + 1
        FROM (SELECT tenant_id, id FROM outbox
              WHERE failed_at IS NULL AND (claimed_until IS NULL OR claimed_until <= p_now)
              ORDER BY created_at LIMIT p_limit FOR UPDATE SKIP LOCKED) due
        WHERE o.tenant_id = due.tenant_id AND o.id = due.id
        RETURNING o.tenant_id, o.id, o.key_id, o.request, o.attempts
    $$;
