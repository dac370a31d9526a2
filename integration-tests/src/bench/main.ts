// `npm run bench -- NAME [--quick]`: runs the benchmark module ./NAME.js. Each module exports
// `run({ quick })`, compares Isthmus side by side with the tool a user would pick instead, prints
// ratios, and writes integration-tests/bench/results/NAME.json and its section of docs/benchmarks.md.
import { existsSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";

export interface BenchOptions {
  quick: boolean;
}

const here = fileURLToPath(new URL(".", import.meta.url));
const available = readdirSync(here)
  .filter((f) => f.endsWith(".js") && !f.endsWith(".test.js") && f !== "main.js" && !f.startsWith("_"))
  .map((f) => f.slice(0, -3))
  .sort();

const args = process.argv.slice(2);
const quick = args.includes("--quick") || process.env.BENCH_QUICK === "1";
const names = args.filter((a) => !a.startsWith("--"));
if (names.length === 0) {
  console.error(`usage: npm run bench -- NAME [--quick]\navailable: ${available.join(", ") || "(none yet)"}`);
  process.exit(2);
}
for (const name of names) {
  if (!/^[a-z0-9-]+$/.test(name) || !existsSync(`${here}${name}.js`)) {
    console.error(`unknown benchmark "${name}"; available: ${available.join(", ") || "(none yet)"}`);
    process.exit(2);
  }
  const mod = (await import(`./${name}.js`)) as { run(opts: BenchOptions): Promise<void> };
  await mod.run({ quick });
}
