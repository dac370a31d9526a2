#!/usr/bin/env node
// Runs every package's compiled tests in one node:test run, so one summary covers the whole tree.
// Usage: node scripts/run-tests.mjs [substring-filter ...]
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const packages = ["schema", "site-agent", "federation", "integration-tests"];
const filters = process.argv.slice(2);

function walk(dir, out) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith(".test.js")) out.push(p);
  }
  return out;
}

const files = [];
for (const pkg of packages) {
  const dist = join(root, pkg, "dist");
  if (existsSync(dist)) walk(dist, files);
}
const selected = files
  .map((f) => relative(root, f))
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
  .sort();
if (selected.length === 0) {
  console.error("no test files matched", filters);
  process.exit(1);
}
const concurrency = process.env.TEST_CONCURRENCY ?? "2";
const r = spawnSync(
  process.execPath,
  [
    "--test",
    "--test-reporter=spec",
    `--test-concurrency=${concurrency}`,
    "--test-timeout=600000",
    ...selected,
  ],
  {
    cwd: root,
    stdio: "inherit",
    // Every SQL statement the tests send is checked for what CockroachDB refuses and PostgreSQL
    // accepts (site-agent/src/controller/db/portable-sql.ts): CI has PostgreSQL only.
    env: { ISTHMUS_SQL_PORTABILITY_CHECK: "1", ...process.env },
  },
);
process.exit(r.status ?? 1);
