// `isthmus dev`: one command that runs a local federation for trying Isthmus on one machine.
// Today it starts only what exists — the health service — and says so; the coordinator group,
// site controllers and agents join it as they are built.
import { Server, ServerCredentials } from "@grpc/grpc-js";
import {
  createLogger,
  HealthState,
  healthpb,
  healthService,
  loadConfig,
  onShutdown,
  startGrpcServer,
} from "@isthmus/schema";
import { z } from "zod";

const DevConfig = z.object({
  listen: z
    .string()
    .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "expected host:port, e.g. 127.0.0.1:7400")
    .default("127.0.0.1:7400"),
  logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).optional(),
});

export async function runDev(opts: { listen?: string; config?: string }): Promise<void> {
  const config = loadConfig(DevConfig, {
    file: opts.config,
    env: process.env,
    overrides: { listen: opts.listen },
  });
  const log = createLogger({ name: "isthmus-dev", level: config.logLevel });
  const health = new HealthState("dev");
  const server = new Server();
  server.addService(healthpb.HealthServiceService, healthService(health));
  const started = await startGrpcServer(server, config.listen, ServerCredentials.createInsecure(), log);
  health.set("dev", true);
  log.info(
    { health: started.address },
    "isthmus dev is up. Running so far: the health service only (coordinator, sites and agents are not built yet)",
  );
  onShutdown(log, [() => health.shutdown(), () => started.stop()]);
}
