-- Schema 12: versioned payload schemas. A queue's versions are immutable
-- once registered; a job records the version its payload was validated
-- against.
ALTER TABLE jobs ADD COLUMN schema_version integer;

CREATE TABLE queue_schemas (
    tenant_id      uuid NOT NULL,
    queue          text NOT NULL,
    version        integer NOT NULL,
    schema         text NOT NULL,           -- JSON Schema (draft 2020-12) of payloads
    output_schema  text,                    -- JSON Schema of outputs, if any
    forced         boolean NOT NULL,        -- registered despite breaking changes
    reason         text,                    -- why, when forced
    created_at     bigint NOT NULL,
    PRIMARY KEY (tenant_id, queue, version)
);

ALTER TABLE queue_schemas ENABLE ROW LEVEL SECURITY;
ALTER TABLE queue_schemas FORCE ROW LEVEL SECURITY;
DO $$
BEGIN
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON queue_schemas USING (tenant_id = steadfast_tenant() OR current_user = %L) '
        'WITH CHECK (tenant_id = steadfast_tenant() OR current_user = %L)',
        current_user, current_user);
END
$$;
