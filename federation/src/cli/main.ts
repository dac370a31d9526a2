#!/usr/bin/env node
// The one `isthmus` binary. Each subcommand lives in its own module and is imported lazily so
// `isthmus get` does not load the agent's datapath, and the site-agent entry points are only
// loaded by the subcommands that run them.
import { Command, CommanderError, Option } from "commander";
import { registerAdminCommands, withConnection } from "./admin-commands.js";

const program = new Command();
program
  .name("isthmus")
  .description("Isthmus: multi-site network virtualization federation")
  .version("0.1.0")
  .showHelpAfterError()
  .exitOverride();

program
  .command("dev")
  .description(
    "run a whole local federation on this machine: 3 coordinators, and per site a controller (embedded PostgreSQL), a host agent and a gateway agent",
  )
  .option("--listen <host:port>", "address of the local health endpoint", undefined)
  .option("--config <file>", "YAML configuration file")
  .option("--data-dir <dir>", "where the local coordinators keep data and keys (default .isthmus)")
  .option("--ephemeral", "keep data in a temporary directory removed on exit")
  .option(
    "--sites <n|names>",
    "how many sites (ams, fra, site-3, …) or their names, comma separated (default 2)",
  )
  .action(async (opts: { listen?: string; config?: string }) => {
    const { runDev } = await import("./dev.js");
    await runDev(opts);
  });

registerAdminCommands(program);

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

function addBootstrapOptions(cmd: Command): Command {
  return cmd
    .description("create the coordinator signing keys and a first admin token (files 0600, dir 0700)")
    .requiredOption("--dir <dir>", "key directory to create")
    .option("--alg <alg>", "signing algorithm: EdDSA or ES256", "EdDSA")
    .option("--force", "replace existing keys (invalidates every token they signed)")
    .option("--subject <name>", "subject of the first admin token", "bootstrap-admin")
    .option("--admin-ttl <duration>", "lifetime of the first admin token", "24h")
    .option("--issuer <name>", "issuer name of this federation's tokens")
    .action(async (opts) => {
      const { runBootstrap } = await import("./auth-bootstrap.js");
      process.exitCode = await runBootstrap(opts);
    });
}
addBootstrapOptions(program.command("bootstrap"));
const authCmd = program.command("auth").description("coordinator signing keys");
addBootstrapOptions(authCmd.command("bootstrap"));
authCmd
  .command("rotate")
  .description("make a new signing key current; old keys stay trusted until retired")
  .requiredOption("--dir <dir>", "key directory")
  .option("--alg <alg>", "algorithm of the new key (default: the current one's)")
  .action(async (opts: { dir: string; alg?: string }) => {
    const { runRotate } = await import("./auth-rotate.js");
    process.exitCode = await runRotate(opts);
  });
authCmd
  .command("retire")
  .description("stop trusting an old signing key (tokens it signed are refused)")
  .requiredOption("--dir <dir>", "key directory")
  .requiredOption("--kid <kid>", "key id to retire")
  .action(async (opts: { dir: string; kid: string }) => {
    const { runRetire } = await import("./auth-rotate.js");
    process.exitCode = await runRetire(opts);
  });

program
  .command("token")
  .description("admin and viewer tokens")
  .command("create")
  .description("mint an admin or viewer token with the coordinator's signing key")
  .addOption(
    new Option("--key-dir <dir>", "coordinator key directory").env("ISTHMUS_KEY_DIR").makeOptionMandatory(),
  )
  .requiredOption("--role <role>", "admin (read and write) or viewer (read only)")
  .option("--ttl <duration>", "lifetime, e.g. 30m, 1h, 7d", "1h")
  .option("--subject <name>", "who the token is for (shown in logs)", "admin")
  .option("--out <file>", "write the token to this file (0600) instead of stdout")
  .action(async (opts) => {
    const { runTokenCreate } = await import("./token-create.js");
    process.exitCode = await runTokenCreate(opts);
  });

const siteCmd = program.command("site").description("onboard and manage sites");
withConnection(
  siteCmd
    .command("add")
    .description(
      "register a site and mint its single-use onboarding token (through a coordinator, or offline with --key-dir)",
    )
    .argument("<name>", "site name")
    .addOption(
      new Option(
        "--key-dir <dir>",
        "mint offline with this coordinator key directory instead of calling AddSite",
      ).env("ISTHMUS_KEY_DIR"),
    )
    .option("--ttl <duration>", "how long the token may be used", "15m")
    .option("--region <region>", "the site's region (AddSite only)")
    .option("--description <text>", "free text (AddSite only)")
    .option("--out <file>", "write the token to this file (0600)")
    .option("-o, --output <format>", "text or json", "text"),
).action(async (name: string, opts) => {
  const { runSiteAdd } = await import("./site-add.js");
  process.exitCode = await runSiteAdd(name, opts);
});
withConnection(
  siteCmd
    .command("list")
    .description("sites with their state, key, applied index and lag")
    .option("-o, --output <format>", "table or json", "table"),
).action(async (opts) => {
  const { runSiteList } = await import("./site-list.js");
  process.exitCode = await runSiteList(opts);
});
withConnection(
  siteCmd
    .command("revoke")
    .description("cut a site off on every coordinator (its calls are refused, its streams end)")
    .argument("<name>", "site name")
    .option("-o, --output <format>", "text or json", "text"),
).action(async (name: string, opts) => {
  const { runSiteRevoke } = await import("./site-revoke.js");
  process.exitCode = await runSiteRevoke(name, opts);
});
siteCmd
  .command("join")
  .description("run at the site: make its key pair, register it with the federation, write a credential")
  .option("--token <jwt>", "the onboarding token from `isthmus site add`")
  .option("--token-file <file>", "read the onboarding token from this file")
  .requiredOption("--federation <addrs>", "coordinator addresses, comma separated (host:port)")
  .requiredOption("--key-dir <dir>", "directory for the site's private key and credential")
  .option("--credential <file>", "credential file to write (default KEY_DIR/credential.json)")
  .option("--ca <file>", "CA certificate to verify the coordinators' TLS certificates")
  .option("--insecure", "plaintext gRPC to a non-loopback address (testing only)")
  .option("--force", "join again with a new key even if a credential exists")
  .option("--timeout <ms>", "deadline per coordinator in milliseconds", "10000")
  .action(async (opts) => {
    const { runSiteJoin } = await import("./site-join.js");
    process.exitCode = await runSiteJoin(opts);
  });

const agentCmd = program
  .command("agent")
  .description("run this host's edge agent (datapath, tunnels, flow state); `agent flows` dumps its flows")
  .option("--config <file>", "YAML configuration file (agent: section)")
  .option("--host <id>", "this host's id in the site topology (already registered)")
  .option("--name <host name>", "register under this name (RegisterHost) instead of giving --host")
  .option("--admin-token-file <file>", "admin token used to register (with --name)")
  .option("--controller <host:port>", "site controller gRPC address")
  .option("--token-file <file>", "host token from the site controller (written when registering)")
  .option("--tunnel-ip <ip>", "underlay IPv4 address for VXLAN")
  .option("--tunnel-port <port>", "VXLAN UDP port (default 4789)")
  .option("--role <role>", "host | gateway")
  .option("--wan-ip <ip>", "gateway only: address other sites' gateways reach (default: --tunnel-ip)")
  .option("--wan-port <port>", "gateway only: WAN VXLAN port (default 4789)")
  .option("--metrics-listen <host:port>", "Prometheus /metrics and /healthz (default 127.0.0.1:9480)")
  .option("--admin-listen <host:port>", "local admin endpoint (default 127.0.0.1:9481)")
  .option("--datapath <mode>", "kernel | userspace | auto (default userspace; auto = kernel where it loads)")
  .option(
    "--upcall-busy-poll-us <us>",
    "kernel path: keep reading the upcall ring for this long after each miss instead of sleeping (0 = off, the default; costs a CPU for the window)",
  )
  .action(async (opts: Record<string, string | undefined>) => {
    const { runAgent } = await import("./agent.js");
    await runAgent(opts);
  });
agentCmd
  .command("flows")
  .description("dump the flows of the agent on this host")
  .option("--admin <host:port>", "the agent's admin endpoint", "127.0.0.1:9481")
  .option("--json", "print JSON")
  .action(async (opts: { admin: string; json?: boolean }) => {
    const { runAgentFlows } = await import("./agent-flows.js");
    process.exitCode = await runAgentFlows(opts);
  });

siteCmd
  .command("status")
  .description(
    "run at the site: how current the site controller is (active replica, applied index, staleness)",
  )
  .option("--controller <host:port>", "the site controller's gRPC address", "127.0.0.1:7600")
  .requiredOption(
    "--token-file <file>",
    "a site admin or host token (see site-controller --admin-token-file)",
  )
  .option("--json", "print JSON")
  .option("--timeout <ms>", "deadline in milliseconds", "5000")
  .action(async (opts) => {
    const { runSiteStatus } = await import("./site-status.js");
    process.exitCode = await runSiteStatus(opts);
  });

program
  .command("site-controller")
  .description("run one controller replica of a site (intent → site database → agents)")
  .option("--config <file>", "YAML configuration file (siteController: section)")
  .option("--site <name>", "the site's name")
  .option("--db <url>", "postgres:// URL of PostgreSQL or CockroachDB (default: embedded PostgreSQL)")
  .option("--data-dir <dir>", "directory for the embedded database (default ./isthmus-site)")
  .option("--federation <addrs>", "coordinator addresses, comma separated (default: the credential's)")
  .option("--credential <file>", "the credential `isthmus site join` wrote")
  .option("--listen <host:port>", "gRPC address for agents and the site API (default 127.0.0.1:7600)")
  .option("--metrics-listen <host:port>", "Prometheus /metrics and /healthz (default 127.0.0.1:7680)")
  .option("--admin-token-file <file>", "write a site admin token here at start when absent")
  .option("--controller-id <id>", "this replica's name in the controller lease")
  .action(async (opts: Record<string, string | undefined>) => {
    const { runSiteController } = await import("./site-controller.js");
    await runSiteController(opts);
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
