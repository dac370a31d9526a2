// Public surface of @isthmus/site-agent: entry points the `isthmus` CLI calls lazily, and the
// packet and simulation APIs other packages may use.
export const SITE_AGENT_PACKAGE = "@isthmus/site-agent";
export { type AgentFlags, loadAgentConfig, type RunningAgent, startAgent } from "./agent/agent-process.js";
export type { Datapath, PortIO, Upcall, UpcallDecision } from "./agent/datapath.js";
export { EdgeAgent } from "./agent/edge-agent.js";
export { type FirstSnapshot, firstSnapshot } from "./agent/first-snapshot.js";
export { extractKey, KEY_SIZE, maskFromFields } from "./agent/flow-key.js";
export { FlowTable } from "./agent/flow-table.js";
export { KernelDatapath, type KernelDatapathOptions, kernelDatapathSupport } from "./agent/kernel/index.js";
export { EngineSimulator, maskToFields } from "./agent/sim-adapter.js";
export { snapshotEncodedBytes } from "./agent/snapshot-rules.js";
export * as agentTesting from "./agent/testing/index.js";
export { UserspaceDatapath } from "./agent/userspace-datapath.js";
export { runningPostgresUrl } from "./controller/db/postgres-server.js";
export { startTestPostgres, type TestPostgres } from "./controller/db/test-postgres.js";
export type { EntryTiming } from "./controller/entry-timeline.js";
export {
  type RunningSiteController,
  type SiteControllerFlags,
  startSiteController,
} from "./controller/run-site-controller.js";
export { SiteController, type SiteControllerOptions } from "./controller/site-controller.js";
export {
  DEFAULT_SITE_TOKEN_REFRESH_SEC,
  DEFAULT_SITE_TOKEN_TTL_SEC,
  federationChannelCredentials,
  generateSiteKeyPair,
  loadSiteSigningKey,
  publicJwkOf,
  readSiteCredential,
  SITE_TOKEN_TYPE,
  type SiteCredential,
  type SiteSigningKey,
  SiteTokenSource,
  type SiteTokenSourceOptions,
  writePrivateFile,
  writeSiteCredential,
} from "./controller/site-credential.js";
export * from "./packets/index.js";
export * from "./sim/index.js";
