-- One row the writer updates when a reader needs every earlier commit on
-- disk (see writer.rs, "barrier"): a durable commit that writes fsyncs the
-- WAL, and with it the relaxed commits before it.
CREATE TABLE durability_barrier (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    passed INTEGER NOT NULL
) STRICT;
