// TCP between namespace VMs with nc, for the agent tests: a transfer whose arrival is counted, and
// a connection attempt to a port that may be blocked. Both bounded in time.
import type { agentTesting } from "@isthmus/site-agent";

type Lab = InstanceType<typeof agentTesting.NetnsLab>;
type Vm = agentTesting.Vm;

/** Sends `bytes` zeros from `from` to `to:port`; the client's result and the bytes that arrived. */
export async function tcpTransfer(
  lab: Lab,
  from: Vm,
  to: Vm,
  port: number,
  bytes: number,
): Promise<{ code: number; stderr: string; received: number }> {
  const server = lab.exec(to.ns, ["sh", "-c", `timeout 20 nc -l ${port} | wc -c`], 30_000);
  await lab.listening(to.ns, port);
  const c = await lab.exec(from.ns, ["sh", "-c", `head -c ${bytes} /dev/zero | nc -N -w 5 ${to.ip} ${port}`]);
  return { code: c.code, stderr: c.stderr, received: Number((await server).stdout.trim()) };
}

/** Tries to connect from `from` to a listener on `to:port`; the client's exit code (0 = connected). */
export async function tcpAttempt(lab: Lab, from: Vm, to: Vm, port: number): Promise<number> {
  const listener = lab.spawn(to.ns, ["nc", "-l", String(port)]);
  // A refused connection must be the group's doing, not a listener that was not up yet.
  await lab.listening(to.ns, port);
  const c = await lab.exec(from.ns, ["sh", "-c", `echo hi | nc -N -w 2 ${to.ip} ${port}`]);
  listener.kill();
  return c.code;
}
