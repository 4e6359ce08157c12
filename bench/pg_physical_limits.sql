-- What PostgreSQL itself can make durable per job on this machine, with no
-- network round trip, no Steadfast code and no RLS: a job's life as the
-- three commits the server makes (enqueue; lease, without waiting for the
-- WAL flush; completion), `per_commit` jobs per transaction, in one
-- backend. Three shapes of writes:
--
--   bare     what a plain queue writes: insert the job, mark it running,
--            delete it (graphile-worker's shape);
--   records  Steadfast's schema 2 as the server writes it: the job row and
--            its indexes, two row updates, the attempt row, and one
--            audit_records row per transition (three per job; the chainer's
--            move through audit_intake not counted, so this is a lower
--            bound);
--   batches  the same, but each transaction's audit records in one row (a
--            JSON array) with one lineage row per record, as the embedded
--            store does since its schema 3;
--   narrow   the records shape with the job split in two: the wide row
--            (payload, lease, output; fillfactor 50, indexed only on columns
--            that never change, so its updates are HOT and touch no index)
--            and a narrow row (state, queue, priority, times) that carries
--            every state index.
--
-- Run against a scratch database migrated by `steadfast migrate` (it
-- creates a schema `limits_probe`, dropped at the end, and a tenant of its
-- own, whose rows stay), as a superuser:
--
--   psql -X -q -d <scratch> -v jobs=20000 -f bench/pg_physical_limits.sql
--
-- Each line prints jobs/s for enqueue alone and for lease + completion alone.

\set ON_ERROR_STOP on
SET client_min_messages = notice;
DROP SCHEMA IF EXISTS limits_probe CASCADE;
CREATE SCHEMA limits_probe;

CREATE TABLE limits_probe.plain_jobs (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue     text NOT NULL,
    payload   text NOT NULL,
    run_at    bigint NOT NULL,
    locked_by text,
    attempts  integer NOT NULL DEFAULT 0
);
CREATE INDEX plain_ready ON limits_probe.plain_jobs (queue, run_at, id) WHERE locked_by IS NULL;

CREATE SEQUENCE limits_probe.seq;
CREATE SEQUENCE limits_probe.ids;
-- Ids go on from those an earlier run left.
SELECT setval('limits_probe.ids', (SELECT count(*) + 1 FROM steadfast.jobs)) \gset
CREATE TABLE limits_probe.audit_batches (
    tenant_id  uuid NOT NULL,
    first_seq  bigint NOT NULL,
    last_seq   bigint NOT NULL,
    at         bigint NOT NULL,
    records    jsonb NOT NULL,
    PRIMARY KEY (tenant_id, first_seq)
);
CREATE INDEX audit_batches_by_time ON limits_probe.audit_batches (tenant_id, at, first_seq);
CREATE TABLE limits_probe.audit_job_records (
    tenant_id  uuid NOT NULL,
    job_id     uuid NOT NULL,
    seq        bigint NOT NULL,
    PRIMARY KEY (tenant_id, job_id, seq)
);

-- The narrow shape's two tables: the wide row keeps only indexes on
-- columns that never change; the state indexes move to the narrow row.
CREATE TABLE limits_probe.wide_jobs (LIKE steadfast.jobs INCLUDING DEFAULTS) WITH (fillfactor = 50);
ALTER TABLE limits_probe.wide_jobs ADD PRIMARY KEY (tenant_id, id);
CREATE INDEX wide_by_tenant ON limits_probe.wide_jobs (tenant_id, seq);
CREATE INDEX wide_by_queue ON limits_probe.wide_jobs (tenant_id, queue, seq);
CREATE TABLE limits_probe.job_states (
    tenant_id         uuid NOT NULL,
    id                uuid NOT NULL,
    seq               bigint NOT NULL,
    queue             text NOT NULL,
    state             text NOT NULL,
    priority          integer NOT NULL,
    run_at            bigint NOT NULL,
    lease_expires_at  bigint,
    finished_at       bigint,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX states_ready ON limits_probe.job_states (tenant_id, queue, priority DESC, run_at, seq) WHERE state = 'queued';
CREATE INDEX states_leases ON limits_probe.job_states (lease_expires_at) WHERE state = 'running';
CREATE INDEX states_by_state ON limits_probe.job_states (tenant_id, state, seq);
CREATE INDEX states_finished ON limits_probe.job_states (tenant_id, queue, finished_at) WHERE finished_at IS NOT NULL;

INSERT INTO steadfast.tenants (tenant_id, name, created_at)
VALUES ('00000000-0000-0000-0000-00000000beef', 'pg-limits', 0)
ON CONFLICT DO NOTHING;

-- One transition's audit writes for `ids`, records numbered from seq + 1.
CREATE FUNCTION limits_probe.audit(shape text, ids uuid[], action text, after bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    tenant constant uuid := '00000000-0000-0000-0000-00000000beef';
    hash constant bytea := decode(repeat('ab', 32), 'hex');
    n constant bigint := cardinality(ids);
BEGIN
    IF shape = 'records' THEN
        INSERT INTO steadfast.audit_records (tenant_id, seq, at, actor_kind, actor_key_id, actor_name, request_id,
                                             action, target, job_id, summary, prev_hash, hash)
        SELECT tenant, after + o, 1800000000000, 'key', '0123456789abcdef', 'bench', 'req-0123456789', action,
               id::text, id, '{"from":"queued","to":"running","attempt":1}', hash, hash
        FROM unnest(ids) WITH ORDINALITY AS u(id, o);
    ELSIF shape = 'batches' THEN
        INSERT INTO limits_probe.audit_batches (tenant_id, first_seq, last_seq, at, records)
        SELECT tenant, after + 1, after + n, 1800000000000,
               jsonb_agg(jsonb_build_object('seq', after + o, 'action', action, 'target', id::text, 'job_id', id,
                         'summary', '{"from":"queued","to":"running","attempt":1}',
                         'prev_hash', repeat('ab', 32), 'hash', repeat('ab', 32)))
        FROM unnest(ids) WITH ORDINALITY AS u(id, o);
        INSERT INTO limits_probe.audit_job_records (tenant_id, job_id, seq)
        SELECT tenant, id, after + o FROM unnest(ids) WITH ORDINALITY AS u(id, o);
    END IF;
    UPDATE steadfast.audit_heads h SET seq = after + n WHERE h.tenant_id = tenant;
    RETURN after + n;
END
$$;

CREATE PROCEDURE limits_probe.lives(shape text, jobs integer, per_commit integer)
LANGUAGE plpgsql AS $$
DECLARE
    tenant constant uuid := '00000000-0000-0000-0000-00000000beef';
    payload constant text := '{"n":0,"pad":"' || repeat('x', 80) || '"}';
    ids uuid[];
    head_seq bigint := 0;
    started timestamptz;
    enqueueing interval := '0';
    draining interval := '0';
BEGIN
    INSERT INTO steadfast.audit_heads (tenant_id, seq, hash) VALUES (tenant, 0, '\x00')
    ON CONFLICT (tenant_id) DO NOTHING;
    SELECT h.seq INTO head_seq FROM steadfast.audit_heads h WHERE h.tenant_id = tenant;
    COMMIT;
    FOR chunk IN 1 .. jobs / per_commit LOOP
        -- Time-ordered ids, like the server's UUIDv7 job ids.
        ids := ARRAY(SELECT (lpad(to_hex(nextval('limits_probe.ids')), 8, '0') || '-0000-7000-8000-000000000000')::uuid
                     FROM generate_series(1, per_commit));

        started := clock_timestamp();
        IF shape = 'bare' THEN
            INSERT INTO limits_probe.plain_jobs (queue, payload, run_at)
            SELECT 'bench', payload, 1800000000000 FROM generate_series(1, per_commit);
        ELSIF shape = 'narrow' THEN
            WITH wide AS (
                INSERT INTO limits_probe.wide_jobs (tenant_id, id, seq, queue, payload, state, priority, run_at,
                                                    attempt, uncounted_attempts, max_attempts, timeout_ms,
                                                    created_at, updated_at)
                SELECT tenant, id, nextval('limits_probe.seq'), 'bench', payload, 'queued', 0, 1800000000000, 0, 0,
                       25, 300000, 1800000000000, 1800000000000
                FROM unnest(ids) AS id
                RETURNING tenant_id, id, seq
            )
            INSERT INTO limits_probe.job_states (tenant_id, id, seq, queue, state, priority, run_at)
            SELECT tenant_id, id, seq, 'bench', 'queued', 0, 1800000000000 FROM wide;
            head_seq := limits_probe.audit('records', ids, 'job.enqueued', head_seq);
        ELSE
            INSERT INTO steadfast.jobs (tenant_id, id, queue, payload, state, priority, run_at, attempt,
                                        uncounted_attempts, max_attempts, timeout_ms, created_at, updated_at)
            SELECT tenant, id, 'bench', payload, 'queued', 0, 1800000000000, 0, 0, 25, 300000,
                   1800000000000, 1800000000000
            FROM unnest(ids) AS id;
            head_seq := limits_probe.audit(shape, ids, 'job.enqueued', head_seq);
        END IF;
        COMMIT;
        enqueueing := enqueueing + (clock_timestamp() - started);

        started := clock_timestamp();
        -- A lease need not wait for the WAL flush (the server's choice too).
        PERFORM set_config('synchronous_commit', 'off', true);
        IF shape = 'narrow' THEN
            WITH leased AS (
                UPDATE limits_probe.job_states SET state = 'running', lease_expires_at = 1800000030000
                WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM limits_probe.job_states
                                          WHERE tenant_id = tenant AND queue = 'bench' AND state = 'queued'
                                          ORDER BY priority DESC, run_at, seq LIMIT per_commit
                                          FOR UPDATE SKIP LOCKED)
                RETURNING tenant_id, id
            )
            UPDATE limits_probe.wide_jobs w SET state = 'running', attempt = 1, lease_token = 'lt_' || w.id::text,
                   lease_worker_id = 'worker-1', lease_key_id = '0123456789abcdef',
                   lease_started_at = 1800000000000, lease_expires_at = 1800000030000,
                   lease_deadline = 1800000300000, updated_at = 1800000000000
            FROM leased WHERE w.tenant_id = leased.tenant_id AND w.id = leased.id;
            head_seq := limits_probe.audit('records', ids, 'job.leased', head_seq);
        ELSIF shape = 'bare' THEN
            UPDATE limits_probe.plain_jobs SET locked_by = 'worker-1', attempts = attempts + 1
            WHERE id IN (SELECT id FROM limits_probe.plain_jobs WHERE queue = 'bench' AND locked_by IS NULL
                         ORDER BY run_at, id LIMIT per_commit FOR UPDATE SKIP LOCKED);
        ELSE
            UPDATE steadfast.jobs SET state = 'running', attempt = 1, lease_token = 'lt_' || id::text,
                   lease_worker_id = 'worker-1', lease_key_id = '0123456789abcdef',
                   lease_started_at = 1800000000000, lease_expires_at = 1800000030000,
                   lease_deadline = 1800000300000, updated_at = 1800000000000
            WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM steadfast.jobs
                                      WHERE tenant_id = tenant AND queue = 'bench' AND state = 'queued'
                                      ORDER BY priority DESC, run_at, seq LIMIT per_commit
                                      FOR UPDATE SKIP LOCKED);
            head_seq := limits_probe.audit(shape, ids, 'job.leased', head_seq);
        END IF;
        COMMIT;

        IF shape = 'bare' THEN
            DELETE FROM limits_probe.plain_jobs WHERE locked_by = 'worker-1';
        ELSIF shape = 'narrow' THEN
            UPDATE limits_probe.job_states SET state = 'succeeded', lease_expires_at = NULL,
                   finished_at = 1800000000001
            FROM unnest(ids) AS u(id) WHERE job_states.tenant_id = tenant AND job_states.id = u.id;
            UPDATE limits_probe.wide_jobs SET state = 'succeeded', output = '{}', finished_at = 1800000000001,
                   lease_token = NULL, lease_worker_id = NULL, lease_key_id = NULL, lease_started_at = NULL,
                   lease_expires_at = NULL, lease_deadline = NULL, updated_at = 1800000000001
            FROM unnest(ids) AS u(id) WHERE wide_jobs.tenant_id = tenant AND wide_jobs.id = u.id;
            INSERT INTO steadfast.attempts (tenant_id, job_id, number, worker_id, key_id, started_at, ended_at,
                                            outcome)
            SELECT tenant, id, 1, 'worker-1', '0123456789abcdef', 1800000000000, 1800000000001, 'succeeded'
            FROM unnest(ids) AS id;
            head_seq := limits_probe.audit('records', ids, 'job.succeeded', head_seq);
        ELSE
            UPDATE steadfast.jobs SET state = 'succeeded', output = '{}', finished_at = 1800000000001,
                   lease_token = NULL, lease_worker_id = NULL, lease_key_id = NULL, lease_started_at = NULL,
                   lease_expires_at = NULL, lease_deadline = NULL, updated_at = 1800000000001
            FROM unnest(ids) AS u(id) WHERE jobs.tenant_id = tenant AND jobs.id = u.id;
            INSERT INTO steadfast.attempts (tenant_id, job_id, number, worker_id, key_id, started_at, ended_at,
                                            outcome)
            SELECT tenant, id, 1, 'worker-1', '0123456789abcdef', 1800000000000, 1800000000001, 'succeeded'
            FROM unnest(ids) AS id;
            head_seq := limits_probe.audit(shape, ids, 'job.succeeded', head_seq);
        END IF;
        COMMIT;
        draining := draining + (clock_timestamp() - started);
    END LOOP;
    RAISE NOTICE '%: % per commit: enqueue alone % jobs/s, lease and completion alone % jobs/s',
        rpad(shape, 7), per_commit,
        round(jobs / extract(epoch FROM enqueueing)),
        round(jobs / extract(epoch FROM draining));
END
$$;

CALL limits_probe.lives('bare', :jobs, 100);
CALL limits_probe.lives('records', :jobs, 100);
CALL limits_probe.lives('batches', :jobs, 100);
CALL limits_probe.lives('narrow', :jobs, 100);
CALL limits_probe.lives('bare', :jobs, 1000);
CALL limits_probe.lives('records', :jobs, 1000);
CALL limits_probe.lives('batches', :jobs, 1000);
CALL limits_probe.lives('narrow', :jobs, 1000);

-- The jobs and records it wrote stay (the audit tables refuse deletes): use
-- a scratch database.
DROP SCHEMA limits_probe CASCADE;
