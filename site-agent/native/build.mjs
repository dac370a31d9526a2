#!/usr/bin/env node
// Builds the agent's AF_PACKET addon (native/afpacket.c), its batched UDP tunnel socket
// (native/udpbatch.c), the BPF map addon (native/bpfmap.c), the upcall ring reader
// (native/upcallring.c) and the thread-slice addon (native/sched.c) with node-gyp against the Node headers installed on this machine (never
// downloaded). Skips when the built addon is newer than its
// sources. When node-gyp cannot run here (it needs Python), compiles the one file directly with cc.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";

const here = dirname(new URL(import.meta.url).pathname);
const out = join(here, "build", "Release", "isthmus_afpacket.node");
const addons = [
  { name: "isthmus_afpacket", src: "afpacket.c" },
  { name: "isthmus_udpbatch", src: "udpbatch.c" },
  { name: "isthmus_bpfmap", src: "bpfmap.c" },
  { name: "isthmus_sched", src: "sched.c" },
  { name: "isthmus_upcallring", src: "upcallring.c" },
];
const outs = addons.map((a) => join(here, "build", "Release", `${a.name}.node`));
const sources = [
  ...addons.map((a) => a.src),
  "vnet-offload.h",
  "napi-call.h",
  "binding.gyp",
  "build.mjs",
].map((f) => join(here, f));

if (process.platform !== "linux") {
  console.log("native: AF_PACKET ports are Linux-only; addon not built (in-memory ports still work)");
  process.exit(0);
}
const fresh = (o) => existsSync(o) && sources.every((s) => statSync(s).mtimeMs <= statSync(o).mtimeMs);
if (outs.every(fresh)) process.exit(0);

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
  if (r.status === 0 && outs.every((o) => existsSync(o))) process.exit(0);
  console.error("native: node-gyp failed; trying the C compiler directly");
} else {
  console.log(`native: ${gyp ? "python3" : "node-gyp"} not available; compiling with cc directly`);
}
mkdirSync(dirname(out), { recursive: true });
for (const a of addons) {
  const cc = spawnSync(
    process.env.CC ?? "cc",
    [
      "-O2",
      "-Wall",
      "-fPIC",
      "-shared",
      `-I${headers}`,
      `-DNODE_GYP_MODULE_NAME=${a.name}`,
      "-o",
      join(here, "build", "Release", `${a.name}.node`),
      join(here, a.src),
    ],
    { stdio: "inherit" },
  );
  if (cc.status !== 0) process.exit(cc.status ?? 1);
}
process.exit(0);
