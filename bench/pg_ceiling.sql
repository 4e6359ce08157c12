-- The ceiling of Steadfast's writes on PostgreSQL: a job's life as the
-- statements Steadfast's store sends (set-based, per batch), run inside the
-- server as procedures, so no client, network round trip, HTTP or Rust code
-- is in the way. bench/pg_ceiling.sh loads this into a database migrated by
-- `steadfast migrate` and drives it with pgbench. Run as a superuser (row-
-- level security is bypassed, which only makes the ceiling higher).
SET search_path = steadfast;

CREATE SEQUENCE IF NOT EXISTS ceiling_ids;

-- Time-ordered ids, as Steadfast's UUIDv7 are (index-friendly).
CREATE OR REPLACE FUNCTION ceiling_id() RETURNS uuid LANGUAGE sql AS $$
    SELECT (lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
            || lpad(to_hex(nextval('ceiling_ids')), 20, '0'))::uuid
$$;

CREATE OR REPLACE FUNCTION ceiling_now() RETURNS bigint LANGUAGE sql AS $$
    SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint
$$;

-- Enqueue: the jobs and their `job.enqueued` records, one synchronous commit.
CREATE OR REPLACE PROCEDURE ceiling_enqueue(p_tenant uuid, p_n integer) LANGUAGE plpgsql AS $$
DECLARE
    t bigint := ceiling_now();
BEGIN
    WITH created AS (
        INSERT INTO jobs (tenant_id, id, queue, payload, state, priority, run_at, attempt, uncounted_attempts,
                          max_attempts, timeout_ms, created_at, updated_at)
        SELECT p_tenant, ceiling_id(), 'ceiling', '{"n":0,"pad":"' || repeat('x', 80) || '"}', 'queued', 0, t, 0, 0,
               25, 300000, t, t
        FROM generate_series(1, p_n)
        RETURNING id)
    INSERT INTO audit_intake (tenant_id, at, actor_kind, actor_key_id, actor_name, request_id, action, target, job_id,
                              summary)
    SELECT p_tenant, t, 'key', '0123456789abcdef', 'bench', 'req-0123456789', 'job.enqueued', id::text, id,
           '{"queue":"ceiling","priority":0,"max_attempts":25}'
    FROM created;
END
$$;

-- Drain: a lease (committed without waiting for fsync, as Steadfast's are)
-- and the completion of the leased jobs (synchronous), each with its records.
CREATE OR REPLACE PROCEDURE ceiling_drain(p_tenant uuid, p_n integer) LANGUAGE plpgsql AS $$
DECLARE
    t bigint := ceiling_now();
    ids uuid[];
BEGIN
    SET LOCAL synchronous_commit = off;
    WITH picked AS (
        SELECT id FROM jobs
        WHERE tenant_id = p_tenant AND queue = 'ceiling' AND state = 'queued'
        ORDER BY priority DESC, run_at, seq LIMIT p_n FOR UPDATE SKIP LOCKED),
    leased AS (
        UPDATE jobs j SET state = 'running', attempt = 1, lease_token = 'lt_' || j.id::text || '_1_0123456789abcdef',
            lease_worker_id = 'ceiling-worker', lease_key_id = '0123456789abcdef', lease_started_at = t,
            lease_expires_at = t + 30000, lease_deadline = t + 300000, updated_at = t
        FROM picked WHERE j.tenant_id = p_tenant AND j.id = picked.id
        RETURNING j.id)
    SELECT array_agg(id) INTO ids FROM leased;
    IF ids IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO audit_intake (tenant_id, at, actor_kind, actor_key_id, actor_name, request_id, action, target, job_id,
                              summary)
    SELECT p_tenant, t, 'key', '0123456789abcdef', 'bench', 'req-0123456789', 'job.leased', id::text, id,
           '{"from":"queued","to":"running","attempt":1,"worker":"ceiling-worker"}'
    FROM unnest(ids) AS id;
    COMMIT;

    t := ceiling_now();
    PERFORM 1 FROM jobs WHERE tenant_id = p_tenant AND id = ANY (ids) ORDER BY id FOR UPDATE;
    UPDATE jobs SET state = 'succeeded', output = '{}', lease_token = NULL, lease_worker_id = NULL,
        lease_key_id = NULL, lease_started_at = NULL, lease_expires_at = NULL, lease_deadline = NULL,
        finished_at = t, updated_at = t
    WHERE tenant_id = p_tenant AND id = ANY (ids);
    INSERT INTO attempts (tenant_id, job_id, number, worker_id, key_id, started_at, ended_at, outcome)
    SELECT p_tenant, id, 1, 'ceiling-worker', '0123456789abcdef', t, t, 'succeeded' FROM unnest(ids) AS id;
    INSERT INTO audit_intake (tenant_id, at, actor_kind, actor_key_id, actor_name, request_id, action, target, job_id,
                              summary)
    SELECT p_tenant, t, 'key', '0123456789abcdef', 'bench', 'req-0123456789', 'job.succeeded', id::text, id,
           '{"from":"running","to":"succeeded","attempt":1,"output":{}}'
    FROM unnest(ids) AS id;
END
$$;

-- The chainer: links up to p_limit waiting records under the head lock,
-- each record's hash SHA-256 over its content and the previous hash.
CREATE OR REPLACE PROCEDURE ceiling_chain(p_tenant uuid, p_limit integer) LANGUAGE plpgsql AS $$
DECLARE
    head_seq bigint;
    head_hash bytea;
    r record;
    ids bigint[] := '{}';
    seqs bigint[] := '{}';
    prevs bytea[] := '{}';
    hashes bytea[] := '{}';
BEGIN
    INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (p_tenant, 0, '\x') ON CONFLICT DO NOTHING;
    SELECT seq, hash INTO head_seq, head_hash FROM audit_heads WHERE tenant_id = p_tenant FOR UPDATE;
    FOR r IN SELECT * FROM audit_intake WHERE tenant_id = p_tenant ORDER BY id LIMIT p_limit LOOP
        ids := ids || r.id;
        prevs := prevs || head_hash;
        head_seq := head_seq + 1;
        head_hash := sha256(head_hash || convert_to(concat_ws('|', r.at, r.actor_kind, r.actor_key_id, r.actor_name,
                         r.request_id, r.action, r.target, r.job_id, r.summary), 'UTF8'));
        seqs := seqs || head_seq;
        hashes := hashes || head_hash;
    END LOOP;
    IF cardinality(ids) = 0 THEN
        RETURN;
    END IF;
    INSERT INTO audit_records (tenant_id, seq, at, actor_kind, actor_key_id, actor_name, request_id, action, target,
                               job_id, summary, prev_hash, hash)
    SELECT i.tenant_id, c.seq, i.at, i.actor_kind, i.actor_key_id, i.actor_name, i.request_id, i.action, i.target,
           i.job_id, i.summary, c.prev, c.hash
    FROM unnest(ids, seqs, prevs, hashes) AS c(id, seq, prev, hash)
    JOIN audit_intake i ON i.tenant_id = p_tenant AND i.id = c.id;
    DELETE FROM audit_intake WHERE tenant_id = p_tenant AND id = ANY (ids);
    UPDATE audit_heads SET seq = head_seq, hash = head_hash WHERE tenant_id = p_tenant;
END
$$;
