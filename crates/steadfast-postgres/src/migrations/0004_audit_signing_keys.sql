-- Schema 4: the audit signing keys of the deployment. Every node signs
-- checkpoints with the current key (the highest position); earlier keys
-- are kept, never changed, so the checkpoints they signed still verify.
-- Not a tenant table: a deployment has one key.
CREATE TABLE audit_signing_keys (
    position      bigint PRIMARY KEY,
    public_key    text NOT NULL UNIQUE,
    registered_at bigint NOT NULL
);

CREATE FUNCTION audit_signing_keys_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit signing keys are append-only';
END
$$;
CREATE TRIGGER audit_signing_keys_append_only BEFORE UPDATE OR DELETE ON audit_signing_keys
    FOR EACH ROW EXECUTE FUNCTION audit_signing_keys_append_only();
