// Public surface of raft-ts ("@isthmus/federation/raft"): the shared types, storages, transports
// and the node driver. Internals (record formats, segment scanning) stay private.

export { type RaftLogger, silentRaftLogger } from "./logger.js";
export { MemoryNetwork, type MemoryNetworkOptions, MemoryTransport } from "./memory-transport.js";
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
