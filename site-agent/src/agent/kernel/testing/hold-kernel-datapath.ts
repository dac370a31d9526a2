// A child process for the crash-reclaim test: starts a KernelDatapath with the options given as
// JSON in argv[2], binds the listed interfaces as ports 1..n, prints "ready" and then waits to be
// killed (the test sends SIGKILL, so nothing is cleaned up).
import { silentLogger } from "@isthmus/schema";
import { KernelDatapath, type KernelDatapathOptions } from "../kernel-datapath.js";

const opts = JSON.parse(process.argv[2] ?? "{}") as Omit<KernelDatapathOptions, "log"> & { ports?: string[] };
const dp = new KernelDatapath({ ...opts, log: silentLogger() });
await dp.start();
(opts.ports ?? []).forEach((name, i) => {
  dp.addPort(i + 1, `port-${i + 1}`, dp.openPort(name));
});
process.stdout.write("ready\n");
setInterval(() => {}, 1 << 30);
