// Starting and stopping a grpc-js server the same way in every process: bind, log the real port
// (tests bind port 0), and on shutdown stop taking calls, give in-flight ones a grace period,
// then force-close.
import type { Server, ServerCredentials, ServerOptions } from "@grpc/grpc-js";
import type { Logger } from "pino";

export interface StartedServer {
  server: Server;
  /** The port actually bound (useful when asked for port 0). */
  port: number;
  address: string;
  stop(graceMs?: number): Promise<void>;
}

export const DEFAULT_GRPC_OPTIONS: ServerOptions = {
  "grpc.max_receive_message_length": 16 * 1024 * 1024,
  "grpc.max_send_message_length": 16 * 1024 * 1024,
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.max_concurrent_streams": 1000,
};

export async function startGrpcServer(
  server: Server,
  listen: string,
  credentials: ServerCredentials,
  log: Logger,
): Promise<StartedServer> {
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(listen, credentials, (err, p) => (err ? reject(err) : resolve(p)));
  });
  const host = listen.slice(0, listen.lastIndexOf(":"));
  const address = `${host}:${port}`;
  log.info({ address }, "gRPC server listening");
  return {
    server,
    port,
    address,
    stop(graceMs = 5_000) {
      return new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          log.warn({ graceMs }, "gRPC calls still open after grace period; forcing shutdown");
          server.forceShutdown();
          resolve();
        }, graceMs);
        timer.unref();
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
  };
}

/** True when a listen address only accepts connections from this machine. */
export function isLoopbackAddress(listen: string): boolean {
  const host = listen.slice(0, listen.lastIndexOf(":")).replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}
