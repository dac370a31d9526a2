// Public surface of @isthmus/schema: generated contracts plus the runtime basics every process
// shares (logging, configuration, health, gRPC server lifecycle, metrics endpoint, pauses, shutdown).

// The wire reader the generated decoders take (a subclass may read strings its own way).
export { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
export * as topologypb from "./gen/isthmus/topology/v1/topology.js";
export * as federationpb from "./gen/isthmus/v1/federation.js";
export * as flowstatepb from "./gen/isthmus/v1/flowstate.js";
export * as healthpb from "./gen/isthmus/v1/health.js";
export * as intentpb from "./gen/isthmus/v1/intent.js";
export * as raftpb from "./gen/isthmus/v1/raft.js";
export * as sitepb from "./gen/isthmus/v1/site.js";
export * as sitesyncpb from "./gen/isthmus/v1/site_sync.js";
export {
  INTENT_KIND_KEYS,
  type IntentKindKey,
  type IntentKindMessages,
  intentKindEnum,
  intentKindFromEnum,
} from "./intent-kinds.js";
export { ConfigError, type LoadConfigOptions, loadConfig } from "./runtime/config.js";
export { fixedPort } from "./runtime/fixed-port.js";
export {
  DEFAULT_GRPC_OPTIONS,
  isLoopbackAddress,
  type StartedServer,
  startGrpcServer,
} from "./runtime/grpc-server.js";
export { HealthState, healthService, MAX_HEALTH_WATCHERS, ServingStatus } from "./runtime/health.js";
export {
  componentLogger,
  createLogger,
  LOG_LEVELS,
  type Logger,
  type LoggerOptions,
  type LogLevel,
  levelFromEnv,
  silentLogger,
} from "./runtime/logger.js";
export {
  MALLOC_HUGE_PAGES_TUNABLE,
  mallocHugePagesEnv,
  withMallocHugePages,
} from "./runtime/malloc-env.js";
export {
  logMemoryReducer,
  MEMORY_REDUCER_ENV,
  type MemoryReducerChoice,
  memoryReducerChoice,
  memoryReducerFlags,
  NO_MEMORY_REDUCER_FLAG,
} from "./runtime/memory-reducer.js";
export { closeServer, listenHttp, startMetricsServer } from "./runtime/metrics-server.js";
export {
  attributePauses,
  type PauseOverlap,
  PauseRecorder,
  type PauseReport,
  type ProcessPause,
  pauseOverlap,
} from "./runtime/process-pauses.js";
export {
  chooseScavenger,
  PARALLEL_SCAVENGE_ENV,
  type ScavengerChoice,
  scavengerChoice,
} from "./runtime/scavenger.js";
export { onShutdown, type StopHook } from "./runtime/shutdown.js";
export { wallNow, wallOffsetMs } from "./runtime/wall-clock.js";
export { fieldSize, varintLength, writeField } from "./wire/length-delimited.js";
