// Health state of one process and the gRPC HealthService that serves it. Components flip their
// own entry (raft: "has a leader", controller: "database reachable"); the process is SERVING only
// when every registered component is.
import {
  status as GrpcStatus,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
} from "@grpc/grpc-js";
import {
  type HealthCheckRequest,
  type HealthCheckResponse,
  type HealthServiceServer,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../gen/isthmus/v1/health.js";

export { HealthCheckResponse_ServingStatus as ServingStatus } from "../gen/isthmus/v1/health.js";

interface Entry {
  serving: boolean;
  detail: string;
}

/** Bound on concurrent Watch streams, so a misbehaving client cannot pin unbounded listeners. */
export const MAX_HEALTH_WATCHERS = 64;

export class HealthState {
  private readonly entries = new Map<string, Entry>();
  private readonly listeners = new Set<() => void>();

  constructor(readonly component: string) {}

  /** Registers or updates a service's status; an empty name is not allowed (that is the whole process). */
  set(service: string, serving: boolean, detail = ""): void {
    if (service === "") throw new Error("health: service name must not be empty");
    const prev = this.entries.get(service);
    if (prev && prev.serving === serving && prev.detail === detail) return;
    this.entries.set(service, { serving, detail });
    for (const l of this.listeners) l();
  }

  check(service: string): HealthCheckResponse {
    if (service === "") {
      const down = [...this.entries].filter(([, e]) => !e.serving);
      if (this.entries.size === 0) {
        return {
          status: ServingStatus.SERVING_STATUS_NOT_SERVING,
          component: this.component,
          detail: "starting",
        };
      }
      return down.length === 0
        ? { status: ServingStatus.SERVING_STATUS_SERVING, component: this.component, detail: "" }
        : {
            status: ServingStatus.SERVING_STATUS_NOT_SERVING,
            component: this.component,
            detail: down.map(([n, e]) => `${n}: ${e.detail || "not serving"}`).join("; "),
          };
    }
    const e = this.entries.get(service);
    if (!e)
      return { status: ServingStatus.SERVING_STATUS_SERVICE_UNKNOWN, component: this.component, detail: "" };
    return {
      status: e.serving ? ServingStatus.SERVING_STATUS_SERVING : ServingStatus.SERVING_STATUS_NOT_SERVING,
      component: this.component,
      detail: e.detail,
    };
  }

  /** Marks everything not serving (used at shutdown so probes see it before the port closes). */
  shutdown(detail = "shutting down"): void {
    for (const name of this.entries.keys()) this.set(name, false, detail);
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get watcherCount(): number {
    return this.listeners.size;
  }
}

export function healthService(state: HealthState): HealthServiceServer {
  return {
    check(
      call: ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>,
      callback: sendUnaryData<HealthCheckResponse>,
    ) {
      callback(null, state.check(call.request.service));
    },
    watch(call: ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) {
      if (state.watcherCount >= MAX_HEALTH_WATCHERS) {
        call.emit("error", {
          code: GrpcStatus.RESOURCE_EXHAUSTED,
          details: `too many health watchers (limit ${MAX_HEALTH_WATCHERS})`,
        });
        return;
      }
      let last = -1;
      let lastDetail = "";
      const send = () => {
        const r = state.check(call.request.service);
        if (r.status === last && r.detail === lastDetail) return;
        last = r.status;
        lastDetail = r.detail;
        call.write(r);
      };
      send();
      const off = state.onChange(send);
      call.on("cancelled", off);
      call.on("close", off);
      call.on("error", off);
    },
  };
}
