// `isthmus agent flows`: dumps the flows of the agent on this host from its local admin endpoint.
interface FlowDump {
  id: number;
  match: Record<string, string | number>;
  actions: string;
  packets: number;
  bytes: number;
  idleMs: number;
}

export async function runAgentFlows(opts: { admin: string; json?: boolean }): Promise<number> {
  let body: { host: string; flows: FlowDump[] };
  try {
    const res = await fetch(`http://${opts.admin}/flows`, { signal: AbortSignal.timeout(5000) });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    body = (await res.json()) as typeof body;
  } catch (err) {
    console.error(
      `isthmus agent flows: cannot reach the agent's admin endpoint at ${opts.admin}: ${(err as Error).message}`,
    );
    return 1;
  }
  if (opts.json) {
    console.log(JSON.stringify(body, null, 2));
    return 0;
  }
  console.log(`host ${body.host}: ${body.flows.length} flows`);
  for (const f of body.flows) {
    const match = Object.entries(f.match)
      .map(([k, v]) => `${k}=${v}`)
      .join(",");
    console.log(
      `#${f.id} packets=${f.packets} bytes=${f.bytes} idle=${f.idleMs}ms ${match} actions=${f.actions}`,
    );
  }
  return 0;
}
