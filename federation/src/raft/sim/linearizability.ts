// A linearizability checker in the manner of Porcupine: the Wing–Gong search with Lowe's
// memoization of (set of linearized operations, model state), run separately on each partition
// of the history (per key for a key-value store). It answers whether some total order of the
// operations, consistent with real time, explains every observed output.

export interface Operation<I, O> {
  clientId: number;
  input: I;
  /** Invocation time. */
  call: number;
  /** Response time; Infinity when the outcome is unknown (the operation may or may not have happened). */
  ret: number;
  output: O;
}

export interface Model<S, I, O> {
  init(): S;
  /** Whether `input` with result `output` is legal in state `state`, and the state after it. */
  step(state: S, input: I, output: O): [boolean, S];
  /** Splits a history into independent sub-histories (e.g. one per key). */
  partition?(ops: Operation<I, O>[]): Operation<I, O>[][];
  /** A string that is equal for equal states (memoization key). */
  stateKey(state: S): string;
}

export type CheckResult = "ok" | "illegal" | "unknown";

export interface CheckOutcome {
  result: CheckResult;
  /** Operations in each partition that failed (for a report), when illegal. */
  failedPartition?: number;
  /** Search steps taken (a measure of effort). */
  steps: number;
}

interface Node<I, O> {
  prev: Node<I, O> | undefined;
  next: Node<I, O> | undefined;
  /** Operation id (index in the partition). */
  id: number;
  isCall: boolean;
  /** For calls, the matching return node. */
  match: Node<I, O> | undefined;
  input: I;
  output: O;
}

class Bitset {
  readonly words: Uint32Array;
  constructor(n: number) {
    this.words = new Uint32Array(Math.ceil(n / 32) + 1);
  }
  set(i: number): void {
    this.words[i >>> 5]! |= 1 << (i & 31);
  }
  clear(i: number): void {
    this.words[i >>> 5]! &= ~(1 << (i & 31));
  }
  key(): string {
    // Hex of every word: exact (no collisions), cheap enough for the history sizes we check.
    let s = "";
    for (const w of this.words) s += w.toString(36) + ".";
    return s;
  }
}

/** Builds the doubly linked list of call/return events, ordered by time (calls first on ties). */
function makeList<I, O>(ops: Operation<I, O>[]): Node<I, O> {
  const events: { time: number; isCall: boolean; id: number }[] = [];
  ops.forEach((op, id) => {
    if (!(op.call <= op.ret))
      throw new RangeError(`operation ${id} returns (${op.ret}) before its call (${op.call})`);
    events.push({ time: op.call, isCall: true, id });
    events.push({ time: op.ret, isCall: false, id });
  });
  // Ties: a call before a return, so operations touching the same instant count as concurrent
  // (the permissive reading: never report a violation that depends on clock resolution).
  events.sort((a, b) => a.time - b.time || (a.isCall === b.isCall ? a.id - b.id : a.isCall ? -1 : 1));
  const head: Node<I, O> = {
    prev: undefined,
    next: undefined,
    id: -1,
    isCall: false,
    match: undefined,
    input: undefined as I,
    output: undefined as O,
  };
  const calls = new Map<number, Node<I, O>>();
  let tail = head;
  for (const ev of events) {
    const op = ops[ev.id]!;
    const n: Node<I, O> = {
      prev: tail,
      next: undefined,
      id: ev.id,
      isCall: ev.isCall,
      match: undefined,
      input: op.input,
      output: op.output,
    };
    if (ev.isCall) calls.set(ev.id, n);
    else calls.get(ev.id)!.match = n;
    tail.next = n;
    tail = n;
  }
  return head;
}

/** Removes a call and its return from the list. */
function lift<I, O>(call: Node<I, O>): void {
  call.prev!.next = call.next;
  if (call.next) call.next.prev = call.prev;
  const ret = call.match!;
  ret.prev!.next = ret.next;
  if (ret.next) ret.next.prev = ret.prev;
}

/** Puts a lifted call and its return back (in reverse order of lift). */
function unlift<I, O>(call: Node<I, O>): void {
  const ret = call.match!;
  ret.prev!.next = ret;
  if (ret.next) ret.next.prev = ret;
  call.prev!.next = call;
  if (call.next) call.next.prev = call;
}

function checkSingle<S, I, O>(
  model: Model<S, I, O>,
  ops: Operation<I, O>[],
  budget: { steps: number; max: number },
): CheckResult {
  const head = makeList(ops);
  const linearized = new Bitset(ops.length);
  const cache = new Set<string>();
  const stack: { node: Node<I, O>; state: S }[] = [];
  let state = model.init();
  let entry = head.next;
  while (head.next !== undefined) {
    if (++budget.steps > budget.max) return "unknown";
    if (entry === undefined) throw new Error("linearizability: ran off the end of the history");
    if (entry.isCall) {
      const [ok, next] = model.step(state, entry.input, entry.match!.output);
      if (ok) {
        linearized.set(entry.id);
        const key = `${linearized.key()}|${model.stateKey(next)}`;
        if (!cache.has(key)) {
          cache.add(key);
          stack.push({ node: entry, state });
          state = next;
          lift(entry);
          entry = head.next;
          continue;
        }
        linearized.clear(entry.id);
      }
      entry = entry.next;
    } else {
      // A return whose call cannot be linearized yet: undo the last choice.
      const top = stack.pop();
      if (!top) return "illegal";
      state = top.state;
      linearized.clear(top.node.id);
      unlift(top.node);
      entry = top.node.next;
    }
  }
  return "ok";
}

/**
 * Checks a history against a model. `maxSteps` bounds the search (it is exponential in the worst
 * case); when exceeded the answer is "unknown", never a guess.
 */
export function checkOperations<S, I, O>(
  model: Model<S, I, O>,
  history: Operation<I, O>[],
  maxSteps = 5_000_000,
): CheckOutcome {
  const parts = model.partition ? model.partition(history) : [history];
  const budget = { steps: 0, max: maxSteps };
  let unknown = false;
  for (let k = 0; k < parts.length; k++) {
    const r = checkSingle(model, parts[k]!, budget);
    if (r === "illegal") return { result: "illegal", failedPartition: k, steps: budget.steps };
    if (r === "unknown") unknown = true;
  }
  return { result: unknown ? "unknown" : "ok", steps: budget.steps };
}

// ------------------------------------------------------------------ a key-value register model

export type KvInput = { op: "put"; key: string; value: string } | { op: "get"; key: string };
/** For get: the value read; for put: ignored. */
export type KvOutput = { value: string };

/** A map of registers, each starting at "" — the model of the simulation's KvStore. */
export const kvModel: Model<string, KvInput, KvOutput> = {
  init: () => "",
  step(state, input, output) {
    if (input.op === "put") return [true, input.value];
    return [output.value === state, state];
  },
  partition(ops) {
    const byKey = new Map<string, Operation<KvInput, KvOutput>[]>();
    for (const op of ops) {
      let list = byKey.get(op.input.key);
      if (!list) {
        list = [];
        byKey.set(op.input.key, list);
      }
      list.push(op);
    }
    return [...byKey.keys()].sort().map((k) => byKey.get(k)!);
  },
  stateKey: (s) => s,
};
