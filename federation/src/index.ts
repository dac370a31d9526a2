// Public surface of @isthmus/federation. raft-ts is exported separately as "@isthmus/federation/raft".
export const FEDERATION_PACKAGE = "@isthmus/federation";
export * as auth from "./auth/index.js";
