#!/usr/bin/env node
// The one `isthmus` binary. Each subcommand lives in its own module and is imported lazily so
// `isthmus get` does not load the agent's datapath, and the site-agent entry points are only
// loaded by the subcommands that run them.
import { Command, CommanderError } from "commander";

const program = new Command();
program
  .name("isthmus")
  .description("Isthmus: multi-site network virtualization federation")
  .version("0.1.0")
  .showHelpAfterError()
  .exitOverride();

program
  .command("dev")
  .description("run a whole local federation on this machine (what exists so far: see README)")
  .option("--listen <host:port>", "address of the local health endpoint", undefined)
  .option("--config <file>", "YAML configuration file")
  .action(async (opts: { listen?: string; config?: string }) => {
    const { runDev } = await import("./dev.js");
    await runDev(opts);
  });

program
  .command("health")
  .description("ask an Isthmus process whether it is serving")
  .requiredOption("--address <host:port>", "the process's gRPC address")
  .option("--service <name>", "one service of the process", "")
  .option("--timeout <ms>", "deadline in milliseconds", "3000")
  .action(async (opts: { address: string; service: string; timeout: string }) => {
    const { runHealth } = await import("./health.js");
    process.exitCode = await runHealth(opts);
  });

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode;
  } else {
    console.error(`isthmus: ${(err as Error).message}`);
    process.exitCode = 1;
  }
}
