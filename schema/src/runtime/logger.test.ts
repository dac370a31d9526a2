import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { test } from "node:test";
import { componentLogger, createLogger, levelFromEnv } from "./logger.js";

test("logs are JSON lines with the component on child loggers", () => {
  const lines: string[] = [];
  const dest = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  const log = createLogger({
    name: "coordinator",
    level: "debug",
    destination: dest as never,
    base: { node: "n1" },
  });
  componentLogger(log, "raft").info({ term: 3 }, "became leader");
  log.debug("detail");
  const first = JSON.parse(lines[0]!);
  assert.equal(first.component, "raft");
  assert.equal(first.name, "coordinator");
  assert.equal(first.node, "n1");
  assert.equal(first.level, "info");
  assert.equal(first.term, 3);
  assert.equal(first.msg, "became leader");
  assert.equal(JSON.parse(lines[1]!).level, "debug");
});

test("level from env is validated", () => {
  assert.equal(levelFromEnv({}), "info");
  assert.equal(levelFromEnv({ ISTHMUS_LOG_LEVEL: "DEBUG" }), "debug");
  assert.throws(() => levelFromEnv({ ISTHMUS_LOG_LEVEL: "chatty" }), /not a log level/);
});
