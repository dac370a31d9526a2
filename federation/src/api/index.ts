// Public surface of the coordinator's gRPC API: the two services, the replicator contract they
// run on, and the auth interface they call.
export type { Access, CallAuth, OnboardingIssuer } from "./authenticator.js";
export { federationService } from "./federation-service.js";
export { LEADER_ID_TRAILER, LEADER_TRAILER, serviceError, toServiceError } from "./grpc-errors.js";
export { DEFAULT_STREAM_LIMITS, OpenStreams, type StreamLimits, streamIntent } from "./intent-stream.js";
export { LocalReplicator } from "./local-replicator.js";
export {
  type MemberInfo,
  NotLeaderError,
  type Replicator,
  type ReplicatorStatus,
  UnsupportedError,
} from "./replicator.js";
export { ServiceContext, type ServiceDeps } from "./service-context.js";
export { siteSyncService } from "./site-sync-service.js";
