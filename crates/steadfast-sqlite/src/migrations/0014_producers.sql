-- Schema 14: producer sequence numbers. Per producer, the highest number
-- received and the ranges below it never received (JSON [[from, to], ...]).
CREATE TABLE producers (
    tenant_id      TEXT NOT NULL,
    id             TEXT NOT NULL,
    highest        INTEGER NOT NULL,
    missing        TEXT NOT NULL,
    gaps_total     INTEGER NOT NULL,
    forgotten      INTEGER NOT NULL,
    first_seen_at  INTEGER NOT NULL,
    last_seen_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT, WITHOUT ROWID;
