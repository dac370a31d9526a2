-- SNAT port blocks leased to hosts (SiteService.LeaseSnatBlock): one row per block of a NAT
-- address that some host holds or held. A row whose expires_at has passed is free for any host;
-- releasing deletes the row. Idempotent: safe to re-run.
CREATE TABLE IF NOT EXISTS snat_block_leases (
  device_id TEXT NOT NULL,
  nat_ip TEXT NOT NULL,
  block_start INT8 NOT NULL,
  block_size INT8 NOT NULL,
  host_id TEXT NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (device_id, nat_ip, block_start)
);

CREATE INDEX IF NOT EXISTS snat_block_leases_host ON snat_block_leases (host_id);
