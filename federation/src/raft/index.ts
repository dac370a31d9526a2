// Public surface of raft-ts ("@isthmus/federation/raft"): the pure core, the shared types,
// storages, transports and the node driver. Internals (record formats, segment scanning, the
// core's log and progress bookkeeping) stay private.

export { applyToConfState, decodeConfChange, describeConfChange, encodeConfChange } from "./confchange.js";
export { type DropReason, ProposalDroppedError, RaftInvariantError } from "./errors.js";
export { type RaftLogger, silentRaftLogger } from "./logger.js";
export { MemoryStorage, type MemoryStorageOptions } from "./memory-storage.js";
export { MemoryNetwork, type MemoryNetworkOptions, MemoryTransport } from "./memory-transport.js";
export {
  RaftNode,
  RaftNodeError,
  type RaftNodeErrorCode,
  type RaftNodeOptions,
  type RaftNodeStatus,
} from "./node.js";
export { newMessage, type ProgressStatus, type RaftConfig, RaftCore, type RaftStatus } from "./raft.js";
export * from "./types.js";
export { WalCorruptionError } from "./wal-segment.js";
export {
  DEFAULT_CACHE_BYTES,
  DEFAULT_MAX_RECORD_BYTES,
  DEFAULT_SEGMENT_BYTES,
  type WalStats,
  WalStorage,
  type WalStorageOptions,
} from "./wal-storage.js";
