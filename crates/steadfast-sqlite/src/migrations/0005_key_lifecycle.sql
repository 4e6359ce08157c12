-- Schema 5: API keys with a lifecycle. A key may expire; a revocation may
-- be scheduled (`revoked_at` in the future, during a rotation's grace);
-- the last use is kept to the minute.
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
