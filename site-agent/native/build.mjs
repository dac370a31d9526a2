#!/usr/bin/env node
// Builds the agent's AF_PACKET addon (native/afpacket.c) with node-gyp against the Node headers
// installed on this machine (never downloaded). Skips when the built addon is newer than its
// sources. When node-gyp cannot run here (it needs Python), compiles the one file directly with cc.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";

const here = dirname(new URL(import.meta.url).pathname);
const out = join(here, "build", "Release", "isthmus_afpacket.node");
const sources = ["afpacket.c", "binding.gyp", "build.mjs"].map((f) => join(here, f));

if (process.platform !== "linux") {
  console.log("native: AF_PACKET ports are Linux-only; addon not built (in-memory ports still work)");
  process.exit(0);
}
if (existsSync(out) && sources.every((s) => statSync(s).mtimeMs <= statSync(out).mtimeMs)) process.exit(0);

const nodeDir = dirname(dirname(process.execPath));
const headers = join(nodeDir, "include", "node");
if (!existsSync(join(headers, "node_api.h"))) {
  console.error(`native: Node headers not found at ${headers}; install them (they are not downloaded)`);
  process.exit(1);
}

function nodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(nodeDir, "lib", "node_modules", "npm", "node_modules", "node-gyp", "bin", "node-gyp.js"),
  ];
  return candidates.find((c) => c && existsSync(c));
}

const gyp = nodeGyp();
const python = spawnSync("python3", ["--version"]).status === 0;
if (gyp && python) {
  const r = spawnSync(process.execPath, [gyp, "rebuild", "--loglevel=warn", `--nodedir=${nodeDir}`], {
    cwd: here,
    stdio: ["ignore", "ignore", "inherit"],
  });
  if (r.status === 0 && existsSync(out)) process.exit(0);
  console.error("native: node-gyp failed; trying the C compiler directly");
} else {
  console.log(`native: ${gyp ? "python3" : "node-gyp"} not available; compiling with cc directly`);
}
mkdirSync(dirname(out), { recursive: true });
const cc = spawnSync(
  process.env.CC ?? "cc",
  [
    "-O2",
    "-Wall",
    "-fPIC",
    "-shared",
    `-I${headers}`,
    "-DNODE_GYP_MODULE_NAME=isthmus_afpacket",
    "-o",
    out,
    join(here, "afpacket.c"),
  ],
  { stdio: "inherit" },
);
process.exit(cc.status ?? 1);
