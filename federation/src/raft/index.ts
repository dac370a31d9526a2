// raft-ts public surface: the pure core, its shared types, the memory storage and errors.
// Other packages import raft-ts from here (`@isthmus/federation/raft`), never from deep paths.

export { applyToConfState, decodeConfChange, describeConfChange, encodeConfChange } from "./confchange.js";
export { type DropReason, ProposalDroppedError, RaftInvariantError } from "./errors.js";
export { MemoryStorage, type MemoryStorageOptions } from "./memory-storage.js";
export { newMessage, type ProgressStatus, type RaftConfig, RaftCore, type RaftStatus } from "./raft.js";
export * from "./types.js";
