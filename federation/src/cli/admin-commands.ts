// Registers the coordinator's admin subcommands (apply, get, delete, status, coordinator members)
// on the `isthmus` program. Bodies live in their own modules, imported only when run.
import { type Command, Option } from "commander";

/** --server/--token-file/TLS flags shared by every command that talks to the coordinators. */
export function withConnection(cmd: Command): Command {
  return cmd
    .addOption(
      new Option("--server <addrs>", "coordinator addresses, host:port[,host:port] (env ISTHMUS_SERVER)"),
    )
    .addOption(
      new Option("--token-file <file>", "admin token file (env ISTHMUS_TOKEN_FILE, or ISTHMUS_TOKEN)"),
    )
    .option("--ca <file>", "CA certificate for the coordinators' TLS (env ISTHMUS_CA)")
    .option("--cert <file>", "client certificate for mutual TLS")
    .option("--key <file>", "client key for mutual TLS")
    .option("--insecure", "plaintext gRPC to non-loopback addresses (testing only)")
    .option("--client-config <file>", "client config YAML (default ~/.config/isthmus/client.yaml)")
    .option("--timeout <ms>", "overall deadline per call in milliseconds");
}

export function registerAdminCommands(program: Command): void {
  withConnection(
    program
      .command("apply")
      .description("create/update admin objects to match an intent file (idempotent; never deletes)")
      .requiredOption("-f, --file <intent.yaml>", "intent file")
      .option("--dry-run", "show what would change without changing it")
      .option("-o, --output <format>", "text or json", "text"),
  ).action(async (opts) => {
    const { runApply } = await import("./apply.js");
    process.exitCode = await runApply(opts);
  });

  withConnection(
    program
      .command("get")
      .description("list objects of a kind (or `all`), or show one by name")
      .argument(
        "<kind>",
        "site, network, router, router-interface, security-group, security-group-rule, floating-ip, port, gateway, all",
      )
      .argument("[name]", "object name")
      .option("-o, --output <format>", "table or json", "table"),
  ).action(async (kind: string, name: string | undefined, opts) => {
    const { runGet } = await import("./get.js");
    process.exitCode = await runGet(kind, name, opts);
  });

  withConnection(
    program
      .command("delete")
      .description("delete one admin object (refused while something uses it)")
      .argument("<kind>", "object kind")
      .argument("<name>", "object name")
      .option("--revision <n>", "only if the object is still at this revision")
      .option("-o, --output <format>", "text or json", "text"),
  ).action(async (kind: string, name: string, opts) => {
    const { runDelete } = await import("./delete.js");
    process.exitCode = await runDelete(kind, name, opts);
  });

  withConnection(
    program
      .command("status")
      .description("coordinator group and per-site sync status")
      .option("-o, --output <format>", "table or json", "table"),
  ).action(async (opts) => {
    const { runStatus } = await import("./status.js");
    process.exitCode = await runStatus(opts);
  });

  registerCoordinatorCommand(program);
}

/** `isthmus coordinator` (run a node) and `isthmus coordinator members add|remove`. */
export function registerCoordinatorCommand(program: Command): void {
  const coordinator = program
    .command("coordinator")
    .description("run one node of the coordinator's Raft group (see docs/coordinator.md)")
    .option("--id <id>", "this node's id (env ISTHMUS_COORDINATOR_ID)")
    .option("--listen <host:port>", "gRPC address for peers, admins and sites (default 127.0.0.1:7400)")
    .option(
      "--peers <list>",
      "founding members id=host:port,... including this node (default: just this node)",
    )
    .option("--data-dir <dir>", "raft WAL and snapshots")
    .option("--key-dir <dir>", "key directory from `isthmus bootstrap` (verifies tokens)")
    .option("--tls-cert <file>", "TLS certificate (also presented to peers)")
    .option("--tls-key <file>", "TLS private key")
    .option("--tls-ca <file>", "CA that verifies peers (and clients with --tls-client-auth)")
    .option("--tls-client-auth", "require client certificates from every caller")
    .option("--insecure", "allow plaintext gRPC on non-loopback addresses (testing only; logged)")
    .option("--join", "start empty and wait to be added with `isthmus coordinator members add`")
    .option(
      "--metrics-listen <host:port>",
      "HTTP address for /metrics, /healthz and /debug/pauses (default: none)",
    )
    .option("--config <file>", "YAML configuration file")
    .action(async (opts) => {
      const { runCoordinator } = await import("./coordinator.js");
      process.exitCode = await runCoordinator(opts);
    });
  registerMemberCommands(coordinator);
}

function registerMemberCommands(coordinator: Command): void {
  const members = coordinator
    .command("members")
    .description("online membership changes of the coordinator group");
  withConnection(
    members
      .command("add")
      .description("add a coordinator node to the group")
      .argument("<id>", "node id")
      .argument("<address>", "its host:port")
      .option("--learner", "add as a non-voting learner first")
      .option("-o, --output <format>", "table or json", "table"),
  ).action(async (id: string, address: string, opts) => {
    const { runMembers } = await import("./members.js");
    process.exitCode = await runMembers("add", id, address, opts);
  });
  withConnection(
    members
      .command("remove")
      .description("remove a coordinator node from the group")
      .argument("<id>", "node id")
      .option("-o, --output <format>", "table or json", "table"),
  ).action(async (id: string, opts) => {
    const { runMembers } = await import("./members.js");
    process.exitCode = await runMembers("remove", id, undefined, opts);
  });
}
