-- Schema 13: schedules. Each owes its next tick (next_fire_at, null while
-- paused); the duty finds the due ones across tenants through
-- steadfast_due_schedules().
CREATE TABLE schedules (
    tenant_id     uuid NOT NULL,
    name          text NOT NULL,
    cron          text NOT NULL,
    timezone      text NOT NULL,
    queue         text NOT NULL,
    payload       text NOT NULL,
    overlap       text NOT NULL,            -- skip, allow
    catch_up      text NOT NULL,            -- none, latest
    paused        boolean NOT NULL,
    next_fire_at  bigint,
    last_tick_at  bigint,
    last_outcome  text,                     -- fired, skipped_overlap, missed, failed
    last_job_id   uuid,
    created_at    bigint NOT NULL,
    updated_at    bigint NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;

ALTER TABLE schedules ENABLE ROW LEVEL SECURITY;
ALTER TABLE schedules FORCE ROW LEVEL SECURITY;
DO $$
BEGIN
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON schedules USING (tenant_id = steadfast_tenant() OR current_user = %L) '
        'WITH CHECK (tenant_id = steadfast_tenant() OR current_user = %L)',
        current_user, current_user);
END
$$;

-- The engine's duty finds due schedules across tenants (each tick is then
-- handled in its own tenant's scope).
CREATE FUNCTION steadfast_due_schedules(p_now bigint, p_limit bigint)
    RETURNS TABLE (tenant_id uuid, name text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        SELECT tenant_id, name FROM schedules WHERE next_fire_at <= p_now ORDER BY next_fire_at LIMIT p_limit
    $$;

CREATE FUNCTION steadfast_next_schedule_due()
    RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        SELECT min(next_fire_at) FROM schedules WHERE next_fire_at IS NOT NULL
    $$;
