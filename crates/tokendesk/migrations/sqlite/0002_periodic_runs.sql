-- Periodic work (the sweep, purges) runs once per period across all instances: an instance
-- runs it only after claiming the period here with a compare-and-set on last_run_at_ms
-- (Unix milliseconds: periods may be a few seconds long).
CREATE TABLE periodic_runs (
    name         TEXT PRIMARY KEY,
    last_run_at_ms INTEGER NOT NULL,
    owner        TEXT NOT NULL,
    runs         INTEGER NOT NULL DEFAULT 0
);
