-- Schema 14: producer sequence numbers. Per producer, the highest number
-- received and the ranges below it never received (JSON [[from, to], ...]).
CREATE TABLE producers (
    tenant_id      uuid NOT NULL,
    id             text NOT NULL,
    highest        bigint NOT NULL,
    missing        text NOT NULL,
    gaps_total     bigint NOT NULL,
    forgotten      bigint NOT NULL,
    first_seen_at  bigint NOT NULL,
    last_seen_at   bigint NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

ALTER TABLE producers ENABLE ROW LEVEL SECURITY;
ALTER TABLE producers FORCE ROW LEVEL SECURITY;
DO $$
BEGIN
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON producers USING (tenant_id = steadfast_tenant() OR current_user = %L) '
        'WITH CHECK (tenant_id = steadfast_tenant() OR current_user = %L)',
        current_user, current_user);
END
$$;
