import assert from "node:assert/strict";
import { test } from "node:test";
import {
  MEMORY_REDUCER_ENV,
  memoryReducerChoice,
  memoryReducerFlags,
  NO_MEMORY_REDUCER_FLAG,
} from "./memory-reducer.js";

test("memory reducer: off by default (a re-execution with the flag is due), node flags and then the environment decide otherwise", () => {
  const byDefault = memoryReducerChoice([], {});
  assert.deepEqual([byDefault.on, byDefault.inEffect], [false, false]);
  assert.deepEqual(memoryReducerFlags(byDefault), [NO_MEMORY_REDUCER_FLAG]);
  // Once re-executed, the flag is there and nothing more is due.
  const after = memoryReducerChoice(["--no-memory-reducer"], {});
  assert.deepEqual([after.on, after.inEffect], [false, true]);
  assert.deepEqual(memoryReducerFlags(after), []);
  // Node's flags win over the environment, the last of several (either spelling) over the rest.
  assert.equal(memoryReducerChoice(["--memory_reducer"], { [MEMORY_REDUCER_ENV]: "0" }).on, true);
  assert.equal(memoryReducerChoice(["--memory-reducer", "--no-memory_reducer"], {}).on, false);
  const kept = memoryReducerChoice([], { [MEMORY_REDUCER_ENV]: "1" });
  assert.deepEqual([kept.on, kept.inEffect], [true, true]);
  assert.deepEqual(memoryReducerFlags(kept), []);
  assert.deepEqual(memoryReducerFlags(memoryReducerChoice([], { [MEMORY_REDUCER_ENV]: "0" })), [
    NO_MEMORY_REDUCER_FLAG,
  ]);
  assert.throws(
    () => memoryReducerChoice([], { [MEMORY_REDUCER_ENV]: "off" }),
    /ISTHMUS_MEMORY_REDUCER must be 0 or 1, got "off"/,
  );
});
