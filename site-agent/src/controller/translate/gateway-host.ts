// Which local gateway host carries this site's exterior derived ports (router uplinks and
// remote-site ports): one deterministic choice every unit agrees on.
import type { IntentView, LocalHost } from "./view.js";

/**
 * The gateway host uplinks are bound to: the alive gateway with the smallest id, else (none
 * alive) the gateway with the smallest id. Deterministic, and moves uplinks off a dead gateway.
 */
export function chosenGatewayHost(view: IntentView): LocalHost | undefined {
  let best: LocalHost | undefined;
  for (const h of view.gatewayHosts()) {
    const alive = h.alive ?? true;
    const bestAlive = best?.alive ?? true;
    if (!best || (alive && !bestAlive) || (alive === bestAlive && h.id < best.id)) best = h;
  }
  return best;
}
