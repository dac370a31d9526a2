// How admin commands reach the coordinators: addresses, token and TLS from flags, ISTHMUS_*
// environment variables or a client config file (loadConfig precedence), and one `rpc` helper
// that tries each coordinator, follows "not the leader, try X" answers, and waits out elections.
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import {
  type CallOptions,
  type ChannelCredentials,
  credentials,
  Metadata,
  type ServiceError,
  status,
} from "@grpc/grpc-js";
import { federationpb, isLoopbackAddress, loadConfig } from "@isthmus/schema";
import { z } from "zod";
import { LEADER_TRAILER } from "../api/index.js";

export const DEFAULT_CLIENT_CONFIG = join(homedir(), ".config", "isthmus", "client.yaml");

const ClientConfig = z.object({
  server: z
    .string()
    .regex(/^[^,\s]+:\d{1,5}(,[^,\s]+:\d{1,5})*$/, "expected host:port[,host:port...]")
    .default("127.0.0.1:7400"),
  token: z.string().optional(),
  tokenFile: z.string().optional(),
  ca: z.string().optional(),
  cert: z.string().optional(),
  key: z.string().optional(),
  insecure: z.boolean().default(false),
  timeoutMs: z.number().int().positive().default(15_000),
});
export type ClientConfig = z.infer<typeof ClientConfig>;

/** Flags every admin command takes (commander camel-cases them). */
export interface ConnectionFlags {
  server?: string;
  tokenFile?: string;
  ca?: string;
  cert?: string;
  key?: string;
  insecure?: boolean;
  clientConfig?: string;
  timeout?: string;
}

export function loadClientConfig(flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env): ClientConfig {
  const file =
    flags.clientConfig ??
    env.ISTHMUS_CLIENT_CONFIG ??
    (existsSync(DEFAULT_CLIENT_CONFIG) ? DEFAULT_CLIENT_CONFIG : undefined);
  return loadConfig(ClientConfig, {
    file,
    env,
    overrides: {
      server: flags.server,
      tokenFile: flags.tokenFile,
      ca: flags.ca,
      cert: flags.cert,
      key: flags.key,
      insecure: flags.insecure || undefined,
      timeoutMs: flags.timeout === undefined ? undefined : Number(flags.timeout),
    },
  });
}

type Unary<Req, Res> = (
  req: Req,
  md: Metadata,
  opts: Partial<CallOptions>,
  cb: (err: ServiceError | null, res: Res) => void,
) => unknown;

/** Status codes after which another coordinator (or the same one a moment later) may succeed. */
const RETRYABLE = new Set<number>([status.UNAVAILABLE, status.DEADLINE_EXCEEDED]);
/** Attempts per call across all coordinators (elections take ~1–2 s with WAN timeouts). */
export const MAX_ATTEMPTS = 12;

export class FederationClient {
  private readonly clients = new Map<string, federationpb.FederationServiceClient>();
  private preferred: string;
  private readonly servers: string[];
  private readonly creds: ChannelCredentials;
  private readonly token: string;

  constructor(readonly config: ClientConfig) {
    this.servers = config.server.split(",");
    this.preferred = this.servers[0] ?? "127.0.0.1:7400";
    this.creds = channelCredentials(config, this.servers);
    this.token = readToken(config);
  }

  private client(address: string): federationpb.FederationServiceClient {
    let c = this.clients.get(address);
    if (!c) {
      c = new federationpb.FederationServiceClient(address, this.creds);
      this.clients.set(address, c);
    }
    return c;
  }

  /** Calls `method` on the leader (following redirects) or any coordinator for reads. */
  async rpc<Req, Res>(
    pick: (c: federationpb.FederationServiceClient) => Unary<Req, Res>,
    req: Req,
  ): Promise<Res> {
    const deadline = Date.now() + this.config.timeoutMs;
    let address = this.preferred;
    let lastErr: ServiceError | undefined;
    const tried = new Set<string>();
    for (let attempt = 0; attempt < MAX_ATTEMPTS && Date.now() < deadline; attempt++) {
      const client = this.client(address);
      const md = new Metadata();
      if (this.token) md.set("authorization", `Bearer ${this.token}`);
      try {
        const res = await new Promise<Res>((resolve, reject) =>
          pick(client).call(client, req, md, { deadline }, (err, r) => (err ? reject(err) : resolve(r))),
        );
        this.preferred = address;
        return res;
      } catch (err) {
        const se = err as ServiceError;
        if (!RETRYABLE.has(se.code)) throw se;
        lastErr = se;
        tried.add(address);
        const leader = se.metadata?.get(LEADER_TRAILER)[0];
        if (typeof leader === "string" && leader && leader !== address) {
          address = leader;
          continue;
        }
        const untried = this.servers.find((s) => !tried.has(s));
        if (untried) {
          address = untried;
          continue;
        }
        // Everyone tried: probably an election. Wait a little and go round again.
        tried.clear();
        address = this.servers[attempt % this.servers.length] ?? address;
        await new Promise((r) => setTimeout(r, Math.min(200 * (attempt + 1), 1000)));
      }
    }
    throw lastErr ?? Object.assign(new Error("no coordinator answered"), { code: status.UNAVAILABLE });
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
  }
}

function readToken(config: ClientConfig): string {
  if (config.token) return config.token.trim();
  if (!config.tokenFile) return "";
  try {
    return readFileSync(config.tokenFile, "utf8").trim();
  } catch (err) {
    throw new Error(`cannot read token file ${config.tokenFile}: ${(err as Error).message}`);
  }
}

function channelCredentials(config: ClientConfig, servers: string[]): ChannelCredentials {
  const read = (what: string, f: string | undefined) => {
    if (!f) return null;
    try {
      return readFileSync(f);
    } catch (err) {
      throw new Error(`cannot read ${what} ${f}: ${(err as Error).message}`);
    }
  };
  if (config.ca || config.cert) {
    return credentials.createSsl(
      read("CA file", config.ca),
      read("key file", config.key),
      read("certificate file", config.cert),
    );
  }
  const remote = servers.filter((s) => !isLoopbackAddress(s));
  if (remote.length > 0 && !config.insecure) {
    throw new Error(
      `refusing plaintext gRPC to ${remote.join(", ")}: give --ca (TLS) or --insecure (testing only)`,
    );
  }
  return credentials.createInsecure();
}

/** One line for a failed call: the status name and the server's message. */
export function describeError(err: unknown): string {
  const se = err as Partial<ServiceError>;
  if (typeof se.code === "number" && se.details !== undefined) return `${status[se.code]}: ${se.details}`;
  return (err as Error).message ?? String(err);
}
