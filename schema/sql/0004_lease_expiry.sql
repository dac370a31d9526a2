-- The controller lease's expiry in a row of its own. Every write transaction reads the lease row
-- (the fence: holder and token); when renewals rewrote that same row every second, a write
-- transaction longer than the renewal interval (a snapshot of a large federation) formed a
-- serialization conflict with a renewal and a concurrent reader and was aborted on every retry.
-- Renewals now write only this row; taking the lease over (a new holder or token) still writes
-- controller_lease, which is what must fence writers out.
-- Same SQL subset as 0001 (CockroachDB and PostgreSQL). Idempotent: safe to re-run.
CREATE TABLE IF NOT EXISTS controller_lease_expiry (
  id INT8 PRIMARY KEY CHECK (id = 1),
  expires_at TIMESTAMPTZ NOT NULL
);
