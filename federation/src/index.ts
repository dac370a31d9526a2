// Public surface of @isthmus/federation. raft-ts is exported separately as "@isthmus/federation/raft".
export const FEDERATION_PACKAGE = "@isthmus/federation";
export * as api from "./api/index.js";
export * as auth from "./auth/index.js";
export * as intent from "./intent/index.js";
