-- Schema 10: what the dashboard reads that nothing else did, each read
-- served by a small partial index (rows only the dashboard looks for).
-- Dead jobs by error kind (dead letters, grouped and listed).
CREATE INDEX jobs_dead_by_kind ON jobs (tenant_id, last_error_kind, seq) WHERE state = 'dead';
-- Steps started and never checkpointed (the uncertain ones among them).
CREATE INDEX steps_unfinished ON steps (tenant_id, started_at) WHERE completed_at IS NULL;
-- Attempts whose worker stopped answering.
CREATE INDEX attempts_lapsed ON attempts (tenant_id, ended_at) WHERE outcome IN ('lease_expired', 'timed_out');
