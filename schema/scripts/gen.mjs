#!/usr/bin/env node
// Regenerates schema/src/gen from schema/proto with buf + ts-proto (both installed from npm).
// Generated code is not committed: `npm run build` always runs this first, so it cannot go stale.
import { spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const schemaDir = join(dirname(new URL(import.meta.url).pathname), "..");
const require = createRequire(import.meta.url);
const buf = join(dirname(require.resolve("@bufbuild/buf/package.json")), "bin", "buf");

rmSync(join(schemaDir, "src", "gen"), { recursive: true, force: true });
for (const args of [["lint"], ["generate"]]) {
  const r = spawnSync(process.execPath, [buf, ...args], { cwd: schemaDir, stdio: "inherit" });
  if (r.status !== 0) {
    console.error(`buf ${args.join(" ")} failed (exit ${r.status})`);
    process.exit(r.status ?? 1);
  }
}
