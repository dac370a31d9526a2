-- Which version of the translation derived the stored topology. A controller whose translation
-- derives something else from the same intent (a new shape of chains, say) finds an older
-- version here when it becomes active, moves the stored topology to what it derives now in one
-- revision (agents get the difference like any change) and records its own version with it.
-- Same SQL subset as 0001 (CockroachDB and PostgreSQL). Idempotent: safe to re-run.
CREATE TABLE IF NOT EXISTS translation_state (
  id INT8 PRIMARY KEY CHECK (id = 1),
  version INT8 NOT NULL
);
