// Public surface of @isthmus/site-agent: entry points the `isthmus` CLI calls lazily, and the
// packet and simulation APIs other packages may use.
export const SITE_AGENT_PACKAGE = "@isthmus/site-agent";
export * from "./packets/index.js";
export * from "./sim/index.js";
