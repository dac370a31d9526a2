// The agent's two small HTTP endpoints: Prometheus metrics and health (for scrapers and probes),
// and the local admin endpoint `isthmus agent flows` reads (flows, ports, status as JSON).
import { createServer, type Server } from "node:http";
import { type HealthState, ServingStatus } from "@isthmus/schema";
import type { Registry } from "prom-client";

export interface AdminSources {
  flows: () => unknown;
  status: () => unknown;
  /** Flow-setup latency samples recorded after `since` (a previous `total`); kernel path only. */
  flowSetup?: (since: number) => unknown;
}

function listen(server: Server, host: string, port: number): Promise<number> {
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
  return { server, port: await listen(server, host, port) };
}

export async function startAdminServer(
  src: AdminSources,
  host: string,
  port: number,
): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://admin");
    const since = Number(url.searchParams.get("since") ?? 0);
    const body =
      url.pathname === "/flows"
        ? src.flows()
        : url.pathname === "/status"
          ? src.status()
          : url.pathname === "/flow-setup" && src.flowSetup && Number.isInteger(since) && since >= 0
            ? src.flowSetup(since)
            : undefined;
    if (body === undefined) {
      res.writeHead(404);
      res.end(
        `not found: try /flows or /status${src.flowSetup ? " or /flow-setup?since=<n> (n an integer ≥ 0)" : ""}\n`,
      );
      return;
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  });
  return { server, port: await listen(server, host, port) };
}

export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections?.();
    server.close(() => resolve());
  });
}
