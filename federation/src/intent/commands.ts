// Encoding of IntentCommand for the raft log. The proposer stamps its wall clock here (and only
// here): the state machine takes time from the log, never from its own clock.
import { federationpb } from "@isthmus/schema";

export function encodeCommand(
  cmd: Omit<federationpb.IntentCommand, "proposedUnixMs">,
  nowUnixMs: number,
): Uint8Array {
  return federationpb.IntentCommand.encode({ ...cmd, proposedUnixMs: nowUnixMs }).finish();
}
