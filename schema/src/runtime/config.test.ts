import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { z } from "zod";
import { ConfigError, loadConfig } from "./config.js";

const schema = z.object({
  coordinator: z
    .object({
      listen: z
        .string()
        .regex(/^[^:]+:\d+$/, "expected host:port")
        .default("127.0.0.1:7400"),
      heartbeatMs: z.number().int().positive().default(100),
    })
    .default({ listen: "127.0.0.1:7400", heartbeatMs: 100 }),
  logLevel: z.enum(["info", "debug"]).default("info"),
});

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tmpFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), "isthmus-config-"));
  dirs.push(dir);
  const f = join(dir, "isthmus.yaml");
  writeFileSync(f, text);
  return f;
}

test("defaults apply when nothing is given", () => {
  const c = loadConfig(schema, {});
  assert.equal(c.coordinator.listen, "127.0.0.1:7400");
  assert.equal(c.coordinator.heartbeatMs, 100);
});

test("file, env and flags layer in that order", () => {
  const f = tmpFile("coordinator:\n  listen: 10.0.0.1:1\n  heartbeatMs: 50\n");
  const c = loadConfig(schema, {
    file: f,
    env: { ISTHMUS_COORDINATOR__HEARTBEAT_MS: "70", UNRELATED: "x" },
    overrides: { "coordinator.listen": "127.0.0.2:9", logLevel: undefined },
  });
  assert.equal(c.coordinator.listen, "127.0.0.2:9");
  assert.equal(c.coordinator.heartbeatMs, 70);
});

test("a bad field in a file is named with its line", () => {
  const f = tmpFile("coordinator:\n  listen: nope\n");
  assert.throws(
    () => loadConfig(schema, { file: f }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.field, "coordinator.listen");
      assert.match(err.message, /field "coordinator\.listen"/);
      assert.match(err.message, /isthmus\.yaml:2:11/);
      assert.match(err.message, /expected host:port/);
      return true;
    },
  );
});

test("a bad field from the environment names the variable", () => {
  assert.throws(
    () => loadConfig(schema, { env: { ISTHMUS_COORDINATOR__HEARTBEAT_MS: "-5" } }),
    (err: unknown) =>
      err instanceof ConfigError &&
      err.field === "coordinator.heartbeatMs" &&
      /ISTHMUS_COORDINATOR__HEARTBEAT_MS/.test(err.message),
  );
});

test("a bad flag value names the flag as it is typed", () => {
  assert.throws(
    () => loadConfig(schema, { overrides: { logLevel: "loud" } }),
    (err: unknown) =>
      err instanceof ConfigError && err.field === "logLevel" && /flag --log-level\b/.test(err.message),
  );
  assert.throws(
    () => loadConfig(schema, { overrides: { "coordinator.heartbeatMs": -1 } }),
    (err: unknown) =>
      err instanceof ConfigError &&
      /invalid field "coordinator.heartbeatMs" \(from flag --heartbeat-ms\)/.test(err.message),
  );
});

test("a required field nobody set says how to set it", () => {
  const required = z.object({ agent: z.object({ tunnelIp: z.string(), controller: z.string() }) });
  assert.throws(
    () =>
      loadConfig(required, {
        env: {},
        overrides: { "agent.tunnelIp": "10.0.0.1", "agent.controller": undefined },
      }),
    (err: unknown) =>
      err instanceof ConfigError &&
      err.field === "agent.controller" &&
      err.message ===
        'missing field "agent.controller": set it with the flag --controller, the environment variable ' +
          'ISTHMUS_AGENT__CONTROLLER or "agent.controller" in the config file',
  );
  // A field without a flag is not offered one; a value set but wrong is not "missing".
  assert.throws(
    () => loadConfig(required, { env: { ISTHMUS_AGENT__CONTROLLER: "c:1" } }),
    (err: unknown) =>
      err instanceof ConfigError &&
      err.message ===
        'missing field "agent.tunnelIp": set it with the environment variable ISTHMUS_AGENT__TUNNEL_IP or "agent.tunnelIp" in the config file',
  );
  assert.throws(
    () => loadConfig(required, { env: { ISTHMUS_AGENT__CONTROLLER: "c:1", ISTHMUS_AGENT__TUNNEL_IP: "5" } }),
    (err: unknown) =>
      err instanceof ConfigError &&
      /invalid field "agent.tunnelIp" \(from environment variable/.test(err.message),
  );
});

test("malformed YAML names the file and line", () => {
  const f = tmpFile("coordinator:\n  listen: [unclosed\n");
  assert.throws(
    () => loadConfig(schema, { file: f }),
    (err: unknown) =>
      err instanceof ConfigError && /invalid YAML in .*isthmus\.yaml:\d+:\d+/.test(err.message),
  );
});

test("a missing file is a clear error", () => {
  assert.throws(() => loadConfig(schema, { file: "/nonexistent/isthmus.yaml" }), /cannot read config file/);
});
