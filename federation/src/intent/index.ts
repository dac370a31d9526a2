// Public surface of the intent model: the replicated state machine and the helpers the API and
// CLI share (kinds, command encoding, errors).
export { type Address, type Prefix, parseAddress, parsePrefix } from "./address.js";
export { encodeCommand } from "./commands.js";
export { IntentError, type IntentErrorCode, invalid } from "./errors.js";
export { ChangeJournal, DEFAULT_JOURNAL_LIMIT } from "./journal.js";
export {
  type AnyObject,
  deterministicUuid,
  innerOf,
  isUuid,
  KIND_KEYS,
  KIND_NAMES,
  type KindKey,
  type KindMessages,
  kindEnum,
  kindFromEnum,
  kindFromName,
  kindOf,
  metaOf,
  wrap,
} from "./kinds.js";
export {
  type AppliedEvent,
  type ApplyFailed,
  type ApplyOk,
  type ApplyResult,
  DEFAULT_MAX_OBJECTS_PER_KIND,
  DEFAULT_MAX_REMEMBERED_TOKENS,
  IntentStateMachine,
  type IntentStateMachineOptions,
  TOKEN_SKEW_MS,
} from "./state-machine.js";
export { GLOBAL_VNI_MAX, GLOBAL_VNI_MIN } from "./validate.js";
