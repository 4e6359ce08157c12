-- Schema 4: the audit signing keys of the deployment. The server signs
-- checkpoints with the current key (the highest position); earlier keys
-- are kept, never changed, so the checkpoints they signed still verify.
CREATE TABLE audit_signing_keys (
    position      INTEGER PRIMARY KEY,
    public_key    TEXT NOT NULL UNIQUE,
    registered_at INTEGER NOT NULL
) STRICT;

CREATE TRIGGER audit_signing_keys_append_only_update BEFORE UPDATE ON audit_signing_keys
BEGIN
    SELECT RAISE(ABORT, 'audit signing keys are append-only');
END;
CREATE TRIGGER audit_signing_keys_append_only_delete BEFORE DELETE ON audit_signing_keys
BEGIN
    SELECT RAISE(ABORT, 'audit signing keys are append-only');
END;
