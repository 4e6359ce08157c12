-- Schema 5: API keys with a lifecycle. A key may expire; a revocation may
-- be scheduled (`revoked_at` in the future, during a rotation's grace);
-- the last use is kept to the minute. Schema 4's functions stay for nodes
-- of the previous release during a rolling upgrade.
ALTER TABLE api_keys ADD COLUMN expires_at bigint, ADD COLUMN last_used_at bigint;

-- Authentication: a key by its public id, before the tenant is known.
CREATE FUNCTION steadfast_key_by_id(p_key_id text)
    RETURNS TABLE (key_id text, tenant_id uuid, role text, name text, secret_hash bytea, created_at bigint,
                   revoked_at bigint, expires_at bigint, last_used_at bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        SELECT key_id, tenant_id, role, name, secret_hash, created_at, revoked_at, expires_at, last_used_at
        FROM api_keys WHERE key_id = p_key_id
    $$;

-- Local operators: revoke a key at `p_at`, never later than a revocation
-- already scheduled.
CREATE FUNCTION steadfast_revoke_key_at(p_key_id text, p_at bigint)
    RETURNS TABLE (key_id text, tenant_id uuid, role text, name text, created_at bigint, revoked_at bigint,
                   expires_at bigint, last_used_at bigint, changed boolean)
    LANGUAGE sql SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        WITH before AS (SELECT revoked_at FROM api_keys WHERE key_id = p_key_id),
        updated AS (
            UPDATE api_keys SET revoked_at = least(coalesce(revoked_at, p_at), p_at) WHERE key_id = p_key_id
            RETURNING key_id, tenant_id, role, name, created_at, revoked_at, expires_at, last_used_at
        )
        SELECT u.*, u.revoked_at IS DISTINCT FROM b.revoked_at FROM updated u, before b
    $$;

-- A key's last use, written at most once per `p_every` ms whatever the
-- number of nodes.
CREATE FUNCTION steadfast_key_used(p_key_id text, p_at bigint, p_every bigint)
    RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = steadfast, pg_temp
    AS $$
        UPDATE api_keys SET last_used_at = p_at
        WHERE key_id = p_key_id AND (last_used_at IS NULL OR last_used_at <= p_at - p_every)
    $$;
