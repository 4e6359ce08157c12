-- Schema 11: bulk operations. One row per operation: what it was asked
-- (spec: action, filter, reason, the key that started it, as JSON), where
-- its walk of the jobs in seq order is (cursor_seq) and what it did. A
-- batch advances the cursor in the same transaction as the jobs it moved,
-- holding the row (FOR UPDATE) so two nodes never run the same batch.
CREATE TABLE bulk_operations (
    tenant_id     uuid NOT NULL,
    id            uuid NOT NULL,
    spec          text NOT NULL,
    status        text NOT NULL,            -- running, completed, cancelled
    matched       bigint NOT NULL,
    done          bigint NOT NULL,
    failed        bigint NOT NULL,
    failures      text NOT NULL,            -- JSON: the first failures
    through_seq   bigint NOT NULL,
    cursor_seq    bigint NOT NULL,
    created_at    bigint NOT NULL,
    updated_at    bigint NOT NULL,
    finished_at   bigint,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX bulk_operations_by_tenant ON bulk_operations (tenant_id, created_at);
CREATE INDEX bulk_operations_running ON bulk_operations (created_at) WHERE status = 'running';

ALTER TABLE bulk_operations ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulk_operations FORCE ROW LEVEL SECURITY;
DO $$
BEGIN
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON bulk_operations USING (tenant_id = steadfast_tenant() OR current_user = %L) '
        'WITH CHECK (tenant_id = steadfast_tenant() OR current_user = %L)',
        current_user, current_user);
END
$$;

-- The engine's duty finds running operations across tenants (each batch
-- then runs in its own tenant's scope).
CREATE FUNCTION steadfast_running_bulk(p_limit bigint)
    RETURNS TABLE (tenant_id uuid, id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        SELECT tenant_id, id FROM bulk_operations WHERE status = 'running' ORDER BY created_at LIMIT p_limit
    $$;
