// The small HTTP endpoint every long-running process serves for scrapers and probes: Prometheus
// metrics, health, and a few JSON debug views the process names; plus listening and closing an
// HTTP server the same way everywhere.
import { createServer, type Server } from "node:http";
import type { Registry } from "prom-client";
import { type HealthState, ServingStatus } from "./health.js";

/** Listens on host:port (0 = any free port) and resolves with the port bound. */
export function listenHttp(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      const a = server.address();
      resolve(typeof a === "object" && a ? a.port : port);
    });
  });
}

export async function startMetricsServer(
  registry: Registry,
  health: HealthState,
  host: string,
  port: number,
  /** More JSON endpoints by path (the query string is passed in). */
  extra: Record<string, (query: URLSearchParams) => unknown> = {},
): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://metrics");
    const json = Object.hasOwn(extra, url.pathname) ? extra[url.pathname] : undefined;
    if (json) {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(json(url.searchParams)));
    } else if (req.url === "/metrics") {
      registry.metrics().then(
        (body) => {
          res.writeHead(200, { "content-type": registry.contentType });
          res.end(body);
        },
        (err: Error) => {
          res.writeHead(500);
          res.end(err.message);
        },
      );
    } else if (req.url === "/healthz") {
      const h = health.check("");
      res.writeHead(h.status === ServingStatus.SERVING_STATUS_SERVING ? 200 : 503, {
        "content-type": "application/json",
      });
      res.end(JSON.stringify(h));
    } else {
      res.writeHead(404);
      res.end(`not found: try ${["/metrics", "/healthz", ...Object.keys(extra)].join(" or ")}\n`);
    }
  });
  return { server, port: await listenHttp(server, host, port) };
}

export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections?.();
    server.close(() => resolve());
  });
}
