-- The site database: the site's copy of global intent, the local topology derived from it, the
-- change log agents tail, site-local hosts/ports/tunnel keys, and the controller lease.
-- Only SQL that both CockroachDB and PostgreSQL accept (TEXT, INT8, BOOL, BYTEA, TIMESTAMPTZ,
-- JSONB; no sequences whose gaps would matter, no advisory locks). Idempotent: safe to re-run.

-- One row: the last coordinator log index applied (written in the same transaction as the entry).
CREATE TABLE IF NOT EXISTS intent_state (
  id INT8 PRIMARY KEY CHECK (id = 1),
  applied_index INT8 NOT NULL,
  applied_at TIMESTAMPTZ NOT NULL
);

-- The site's copy of global intent: one encoded isthmus.v1.IntentObject per row.
CREATE TABLE IF NOT EXISTS intent_objects (
  kind INT8 NOT NULL,
  id TEXT NOT NULL,
  body BYTEA NOT NULL,
  revision INT8 NOT NULL,
  PRIMARY KEY (kind, id)
);

-- Local topology: one encoded isthmus.topology.v1.TopologyObject per row. origin is 'intent'
-- (derived from global intent) or 'local' (hosts, bound ports); a snapshot replaces only 'intent'.
CREATE TABLE IF NOT EXISTS topology_objects (
  kind INT8 NOT NULL,
  id TEXT NOT NULL,
  body BYTEA NOT NULL,
  revision INT8 NOT NULL,
  origin TEXT NOT NULL,
  PRIMARY KEY (kind, id)
);

-- One row: the topology revision counter. Every writing transaction bumps it, so commits are
-- totally ordered and revisions have no gaps (a rolled-back transaction rolls back its bump).
CREATE TABLE IF NOT EXISTS topology_revision (
  id INT8 PRIMARY KEY CHECK (id = 1),
  revision INT8 NOT NULL
);

-- The change log agents' watch streams tail: one encoded isthmus.topology.v1.TopologyChange
-- per revision, written in the same transaction as the change itself. Pruned from the old end.
CREATE TABLE IF NOT EXISTS topology_changes (
  revision INT8 PRIMARY KEY,
  body BYTEA NOT NULL,
  committed_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS hosts (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  tunnel_ip TEXT NOT NULL,
  tunnel_port INT8 NOT NULL,
  role TEXT NOT NULL,
  wan_ip TEXT NOT NULL,
  wan_port INT8 NOT NULL,
  registered_at TIMESTAMPTZ NOT NULL
);

-- Site-local VM ports; bound when host_id is set.
CREATE TABLE IF NOT EXISTS ports (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  network_id TEXT NOT NULL,
  host_id TEXT NOT NULL,
  interface_name TEXT NOT NULL,
  mac TEXT NOT NULL,
  ips JSONB NOT NULL,
  security_group_ids JSONB NOT NULL,
  tunnel_key INT8 NOT NULL,
  created_at TIMESTAMPTZ NOT NULL
);

-- Site-local tunnel keys (0x000001-0x0FFFFF), each naming one port.
CREATE TABLE IF NOT EXISTS tunnel_keys (
  tunnel_key INT8 PRIMARY KEY CHECK (tunnel_key >= 1 AND tunnel_key <= 1048575),
  port_id TEXT NOT NULL UNIQUE
);

-- One row: which controller replica is active, its fencing token and when its lease expires
-- (database clock, so the two replicas' clocks need not agree).
CREATE TABLE IF NOT EXISTS controller_lease (
  id INT8 PRIMARY KEY CHECK (id = 1),
  holder TEXT NOT NULL,
  token INT8 NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL
);

-- The key the controllers sign host tokens with (shared by both replicas).
CREATE TABLE IF NOT EXISTS controller_keys (
  id TEXT PRIMARY KEY,
  private_jwk TEXT NOT NULL,
  public_jwk TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL
);

INSERT INTO intent_state (id, applied_index, applied_at) VALUES (1, 0, now()) ON CONFLICT (id) DO NOTHING;
INSERT INTO topology_revision (id, revision) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
