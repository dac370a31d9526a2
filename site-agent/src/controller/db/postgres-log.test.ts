import assert from "node:assert/strict";
import { test } from "node:test";
import { postgresLogRelay } from "./postgres-server.js";

function recorder() {
  const lines: { level: string; fields: Record<string, unknown>; msg: string }[] = [];
  const at =
    (level: string) =>
    (fields: Record<string, unknown>, msg: string): void => {
      lines.push({ level, fields, msg });
    };
  return { lines, log: { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") } };
}

test("the server's log lines are relayed one by one across chunks, with their severity as the level", () => {
  const r = recorder();
  const relay = postgresLogRelay(r.log as never);
  relay("2026-11-25 16:00:00.123 UTC [4242] LOG:  checkpoint star");
  assert.equal(r.lines.length, 0, "nothing until the line ends");
  relay("ting: time\n2026-11-25 16:00:01.000 UTC [4243] ERROR:  could not serialize access\n");
  relay("2026-11-25 16:00:02.000 UTC [4242] WARNING:  worker took too long\n\n");
  relay("2026-11-25 16:00:03.000 UTC [4244] FATAL:  the end\nplain text without a prefix\n");
  assert.deepEqual(
    r.lines.map((l) => [l.level, l.fields.severity, l.fields.serverPid, l.msg]),
    [
      ["info", "LOG", 4242, "checkpoint starting: time"],
      ["debug", "ERROR", 4243, "could not serialize access"],
      ["warn", "WARNING", 4242, "worker took too long"],
      ["error", "FATAL", 4244, "the end"],
      ["info", undefined, undefined, "plain text without a prefix"],
    ],
  );
  assert.ok(r.lines.every((l) => l.fields.postgres === true));
});

test("a line past the bound is cut once and the rest of it dropped, whole lines after it are relayed", () => {
  const r = recorder();
  const relay = postgresLogRelay(r.log as never);
  relay(`2026-11-25 16:00:00.000 UTC [1] ERROR:  ${"x".repeat(3000)}`);
  relay("y".repeat(3000));
  relay("z".repeat(3000));
  relay("tail of the long line\n2026-11-25 16:00:01.000 UTC [1] LOG:  next\n");
  assert.equal(r.lines.length, 2);
  assert.match(r.lines[0]!.msg, /…\(cut\)$/);
  assert.ok(r.lines[0]!.msg.length < 4200);
  assert.equal(r.lines[1]!.msg, "next");
});
