-- Audit records wait here, briefly, to join their tenant's chain.
--
-- Appending straight to the chain means locking its head until commit, so
-- every writing transaction of a tenant queued behind the one before it,
-- fsync included. Now a transaction inserts its records here, taking no
-- lock, in the same commit as the change they describe; the chainer
-- (audit.rs, `chain_audit`) moves them into audit_records in intake order,
-- many per transaction, under the head lock. Every audit read chains its
-- tenant's intake first, so a read sees every record committed before it.
CREATE TABLE audit_intake (
    tenant_id     uuid NOT NULL,
    id            bigint GENERATED ALWAYS AS IDENTITY,
    at            bigint NOT NULL,
    actor_kind    text NOT NULL,
    actor_key_id  text,
    actor_name    text NOT NULL,
    request_id    text,
    action        text NOT NULL,
    target        text NOT NULL,
    job_id        uuid,
    summary       text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

ALTER TABLE audit_intake ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_intake FORCE ROW LEVEL SECURITY;
DO $$
BEGIN
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON audit_intake USING (tenant_id = steadfast_tenant() OR current_user = %L) '
        'WITH CHECK (tenant_id = steadfast_tenant() OR current_user = %L)',
        current_user, current_user);
END
$$;

-- Waiting records are never edited; the chainer deletes them once linked.
CREATE FUNCTION audit_intake_unchanged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'waiting audit records are not edited';
END
$$;
CREATE TRIGGER audit_intake_unchanged BEFORE UPDATE ON audit_intake
    FOR EACH ROW EXECUTE FUNCTION audit_intake_unchanged();

-- The chainer's way across tenants: which chains have records waiting, in
-- tenant order after p_after (a skip scan of the primary key: one probe per
-- chain, however many records wait).
CREATE FUNCTION steadfast_audit_intake_tenants(p_after uuid, p_limit integer)
    RETURNS TABLE (tenant_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        WITH RECURSIVE chains AS (
            (SELECT i.tenant_id FROM audit_intake i WHERE i.tenant_id > p_after ORDER BY i.tenant_id LIMIT 1)
            UNION ALL
            SELECT (SELECT i.tenant_id FROM audit_intake i WHERE i.tenant_id > c.tenant_id ORDER BY i.tenant_id LIMIT 1)
            FROM chains c WHERE c.tenant_id IS NOT NULL
        )
        SELECT c.tenant_id FROM chains c WHERE c.tenant_id IS NOT NULL LIMIT p_limit
    $$;
