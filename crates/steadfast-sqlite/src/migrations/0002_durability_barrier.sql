-- One row the writer updated when a reader needed every earlier commit on
-- disk: a durable commit that wrote fsynced the WAL, and with it the
-- relaxed commits before it. No longer written: since the syncer thread
-- (writer.rs) a barrier fsyncs the WAL itself. Kept: migrations only add.
CREATE TABLE durability_barrier (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    passed INTEGER NOT NULL
) STRICT;
