-- Host liveness. Agents heartbeat (SiteService.Heartbeat) to either controller replica, which
-- records the time by the database's clock; the active replica marks a host not alive after the
-- configured timeout without one, and alive again when heartbeats return.
-- Same SQL subset as 0001 (CockroachDB and PostgreSQL). Idempotent: safe to re-run.

-- The last heartbeat (or registration) of each host.
CREATE TABLE IF NOT EXISTS host_heartbeats (
  host_id TEXT PRIMARY KEY,
  last_seen_at TIMESTAMPTZ NOT NULL
);

-- Hosts the active replica has marked not alive (absent = alive), written in the same
-- transaction as the topology change that tells the agents.
CREATE TABLE IF NOT EXISTS hosts_down (
  host_id TEXT PRIMARY KEY,
  since TIMESTAMPTZ NOT NULL
);
