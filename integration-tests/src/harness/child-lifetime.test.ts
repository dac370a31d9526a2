import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

const HERE = new URL(".", import.meta.url).pathname;

async function until(f: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("a child registered with stopOnExit gets SIGTERM when its parent dies of an uncaught error, and the log dir is created", async () => {
  const dir = mkdtempSync(join(tmpdir(), "isthmus-lifetime-"));
  try {
    const logDir = join(dir, "logs", "nested");
    const pidFile = join(dir, "child.pid");
    const termFile = join(dir, "child.term");
    // The child writes its pid, and a file when it gets SIGTERM, then exits.
    const childSrc = `require("fs").writeFileSync(${JSON.stringify(pidFile)}, String(process.pid));
      process.on("SIGTERM", () => { require("fs").writeFileSync(${JSON.stringify(termFile)}, "term"); process.exit(0); });
      setInterval(() => {}, 1000);`;
    const parentSrc = `
      import { spawn } from "node:child_process";
      import { existsSync } from "node:fs";
      import { benchLogStream, stopOnExit } from ${JSON.stringify(join(HERE, "child-lifetime.js"))};
      const log = benchLogStream("parent");
      log.write("started\\n");
      const c = spawn(process.execPath, ["-e", ${JSON.stringify(childSrc)}], { stdio: "ignore" });
      stopOnExit(c);
      const wait = setInterval(() => {
        if (existsSync(${JSON.stringify(pidFile)})) { clearInterval(wait); log.end(() => { throw new Error("boom"); }); }
      }, 20);`;
    const parent = spawn(process.execPath, ["--input-type=module", "-e", parentSrc], {
      env: { ...process.env, ISTHMUS_BENCH_LOG_DIR: logDir },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    parent.stderr.on("data", (b: Buffer) => {
      stderr += b.toString();
    });
    const code = await new Promise<number | null>((r) => parent.once("exit", r));
    assert.notEqual(code, 0, "the parent dies of its uncaught error");
    assert.match(stderr, /boom/);
    assert.equal(readFileSync(join(logDir, "parent.log"), "utf8"), "started\n");
    await until(() => existsSync(termFile), 10_000);
    const pid = Number(readFileSync(pidFile, "utf8"));
    await until(() => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    }, 10_000);
  } finally {
    // Should stopOnExit have failed, the child must not outlive the test.
    const pidFile = join(dir, "child.pid");
    if (existsSync(pidFile)) {
      try {
        process.kill(Number(readFileSync(pidFile, "utf8")), "SIGKILL");
      } catch {
        // already gone
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
});
