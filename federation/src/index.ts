// Public surface of @isthmus/federation. raft-ts is exported separately as "@isthmus/federation/raft".
export const FEDERATION_PACKAGE = "@isthmus/federation";
export * as api from "./api/index.js";
export {
  type BackoffOptions,
  GrpcRaftTransport,
  type GrpcRaftTransportOptions,
  type GrpcRaftTransportStats,
  RAFT_SERVER_OPTIONS,
} from "./api/raft-transport-grpc.js";
export * as auth from "./auth/index.js";
export { pidAlive } from "./cli/dev-supervisor.js";
export * as intent from "./intent/index.js";
