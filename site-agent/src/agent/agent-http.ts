// The agent's local admin endpoint that `isthmus agent flows` reads (flows, ports, status as JSON);
// its metrics and health endpoint is the shared one (startMetricsServer in @isthmus/schema).
import { createServer, type Server } from "node:http";
import { listenHttp } from "@isthmus/schema";

export interface AdminSources {
  flows: () => unknown;
  status: () => unknown;
  /** Flow-setup latency samples recorded after `since` (a previous `total`); kernel path only. */
  flowSetup?: (since: number) => unknown;
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
  return { server, port: await listenHttp(server, host, port) };
}
