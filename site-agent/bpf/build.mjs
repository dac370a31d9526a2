#!/usr/bin/env node
// Builds the kernel fast path's TC eBPF object (flow.bpf.c -> build/flow.bpf.o) with clang
// -target bpf against libbpf-dev's headers. Only when clang is present: without it the kernel
// datapath is unavailable (the loader says so) and everything else still builds.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";

const here = new URL(".", import.meta.url).pathname;
const src = join(here, "flow.bpf.c");
const out = join(here, "build", "flow.bpf.o");
const clang = process.env.BPF_CLANG ?? "clang";

if (process.platform !== "linux") {
  console.log("bpf: the kernel fast path is Linux-only; flow.bpf.o not built");
  process.exit(0);
}
if (spawnSync(clang, ["--version"], { stdio: "ignore" }).status !== 0) {
  console.log(
    `bpf: ${clang} not found; flow.bpf.o not built (kernel datapath unavailable; install clang and libbpf-dev)`,
  );
  process.exit(0);
}
if (!existsSync("/usr/include/bpf/bpf_helpers.h")) {
  console.log("bpf: libbpf headers not found (/usr/include/bpf); flow.bpf.o not built (install libbpf-dev)");
  process.exit(0);
}
const inputs = [src, join(here, "build.mjs")];
if (existsSync(out) && inputs.every((s) => statSync(s).mtimeMs <= statSync(out).mtimeMs)) process.exit(0);

// -target bpf does not search the multiarch include dir where <asm/types.h> lives.
const triple = spawnSync("gcc", ["-dumpmachine"], { encoding: "utf8" }).stdout?.trim() || "x86_64-linux-gnu";
mkdirSync(join(here, "build"), { recursive: true });
const r = spawnSync(
  clang,
  ["-O2", "-g", "-Wall", "-target", "bpf", `-I/usr/include/${triple}`, "-c", src, "-o", out],
  { stdio: "inherit" },
);
if (r.status !== 0) {
  console.error("bpf: clang failed to build flow.bpf.o");
  process.exit(1);
}
