// `isthmus health`: a probe for scripts and people; exit 0 when SERVING, 1 otherwise.
import { credentials, Metadata } from "@grpc/grpc-js";
import { healthpb } from "@isthmus/schema";

export async function runHealth(opts: {
  address: string;
  service: string;
  timeout: string;
}): Promise<number> {
  const timeoutMs = Number(opts.timeout);
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    console.error(
      `isthmus health: --timeout must be a positive number of milliseconds, got "${opts.timeout}"`,
    );
    return 2;
  }
  const client = new healthpb.HealthServiceClient(opts.address, credentials.createInsecure());
  try {
    const res = await new Promise<healthpb.HealthCheckResponse>((resolve, reject) =>
      client.check(
        { service: opts.service },
        new Metadata(),
        { deadline: Date.now() + timeoutMs },
        (err, r) => (err ? reject(err) : resolve(r)),
      ),
    );
    const name = healthpb.healthCheckResponse_ServingStatusToJSON(res.status);
    console.log(`${opts.address} ${res.component}: ${name}${res.detail ? ` (${res.detail})` : ""}`);
    return res.status === healthpb.HealthCheckResponse_ServingStatus.SERVING_STATUS_SERVING ? 0 : 1;
  } catch (err) {
    console.error(`isthmus health: ${opts.address}: ${(err as Error).message}`);
    return 1;
  } finally {
    client.close();
  }
}
