-- Schema 9: operator actions. A replay is a new job linked to the job it
-- runs again; the original's history is never touched.
ALTER TABLE jobs ADD COLUMN replay_of uuid;
