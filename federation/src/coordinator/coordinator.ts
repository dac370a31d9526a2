// One coordinator node, assembled: the intent state machine replicated by raft-ts (WAL on disk,
// gRPC transport between members), and one gRPC port serving the raft transport, FederationService,
// SiteSyncService and health. `isthmus coordinator` runs one; tests start several in a process.
import { type ChannelCredentials, Server, type ServerCredentials } from "@grpc/grpc-js";
import {
  componentLogger,
  federationpb,
  HealthState,
  healthpb,
  healthService,
  type Logger,
  type StartedServer,
  sitesyncpb,
  startGrpcServer,
} from "@isthmus/schema";
import type { CallAuth, OnboardingIssuer } from "../api/authenticator.js";
import { federationService } from "../api/federation-service.js";
import type { StreamLimits } from "../api/intent-stream.js";
import { GrpcRaftTransport } from "../api/raft-transport-grpc.js";
import { ServiceContext } from "../api/service-context.js";
import { siteSyncService } from "../api/site-sync-service.js";
import { type ApplyResult, IntentStateMachine } from "../intent/index.js";
import { RaftNode, WalStorage } from "../raft/index.js";
import { RaftReplicator } from "./raft-replicator.js";

export interface CoordinatorOptions {
  id: string;
  /** host:port this node's gRPC server binds. */
  listen: string;
  /** Founding members, this node included: id → address peers dial. With `join`, the existing members. */
  peers: Record<string, string>;
  /** Start without a configuration and wait to be added (`isthmus coordinator members add`). */
  join?: boolean;
  dataDir: string;
  serverCredentials: ServerCredentials;
  /** Credentials for dialing the other members (TLS or mTLS in production). */
  peerCredentials: ChannelCredentials;
  /** Call authentication; built from the state machine (site keys and revocations live there). */
  auth: (sm: IntentStateMachine) => CallAuth | Promise<CallAuth>;
  issuer?: OnboardingIssuer;
  siteAudience?: string;
  log: Logger;
  /** Raft timing: tick length, and heartbeat/election in ticks (DESIGN §5 defaults: 100 ms, 1, 10). */
  tickMs?: number;
  heartbeatTicks?: number;
  electionTicks?: number;
  /** Snapshot + compact the raft log after this many applied entries. */
  snapshotEvery?: number;
  journalLimit?: number;
  streamLimits?: Partial<StreamLimits>;
}

export class Coordinator {
  private healthTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  private constructor(
    readonly id: string,
    readonly sm: IntentStateMachine,
    readonly node: RaftNode<ApplyResult>,
    readonly replicator: RaftReplicator,
    readonly ctx: ServiceContext,
    readonly server: StartedServer,
    readonly health: HealthState,
    private readonly log: Logger,
  ) {}

  get address(): string {
    return this.server.address;
  }

  static async start(o: CoordinatorOptions): Promise<Coordinator> {
    if (!o.join && !o.peers[o.id])
      throw new Error(`--peers must include this node (${o.id}) and its address`);
    const log = o.log;
    const raftLog = componentLogger(log, "raft");
    const sm = new IntentStateMachine({ journalLimit: o.journalLimit });
    const storage = await WalStorage.open(o.dataDir, { logger: raftLog });
    const transport = new GrpcRaftTransport({ id: o.id, credentials: o.peerCredentials, logger: raftLog });
    let node: RaftNode<ApplyResult>;
    try {
      node = new RaftNode<ApplyResult>({
        id: o.id,
        peers: o.peers,
        join: o.join,
        storage,
        transport,
        stateMachine: sm,
        logger: raftLog,
        tickMs: o.tickMs ?? 100,
        heartbeatTicks: o.heartbeatTicks ?? 1,
        electionTicks: o.electionTicks ?? 10,
        snapshotEvery: o.snapshotEvery ?? 10_000,
        onFatal: (err) => log.fatal({ err }, "raft node stopped on an unrecoverable error"),
      });
    } catch (err) {
      await storage.close();
      throw err;
    }
    const replicator = new RaftReplicator(node);
    const ctx = new ServiceContext({
      sm,
      replicator,
      auth: await o.auth(sm),
      issuer: o.issuer,
      siteAudience: o.siteAudience,
      log: componentLogger(log, "api"),
      limits: o.streamLimits,
    });
    const health = new HealthState("coordinator");
    const server = new Server();
    server.addService(transport.service.definition, transport.service.implementation);
    server.addService(federationpb.FederationServiceService, federationService(ctx));
    server.addService(sitesyncpb.SiteSyncServiceService, siteSyncService(ctx));
    server.addService(healthpb.HealthServiceService, healthService(health));
    let started: StartedServer;
    try {
      started = await startGrpcServer(server, o.listen, o.serverCredentials, log);
    } catch (err) {
      await node.close();
      throw err;
    }
    node.start();
    const c = new Coordinator(o.id, sm, node, replicator, ctx, started, health, log);
    c.watchHealth();
    return c;
  }

  /** Serving = a leader is known (writes and linearizable reads can proceed). */
  private watchHealth(): void {
    const update = () => {
      const st = this.node.status();
      this.health.set(
        "raft",
        st.leader !== "",
        st.leader ? `${st.role}, leader ${st.leader}, term ${st.term}` : "no leader (election or no quorum)",
      );
    };
    update();
    this.healthTimer = setInterval(update, 500);
    this.healthTimer.unref();
  }

  /** Stops abruptly, like a crash: no grace for calls, open streams cut (tests). */
  async kill(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.healthTimer) clearInterval(this.healthTimer);
    this.server.server.forceShutdown();
    await this.node.close();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.healthTimer) clearInterval(this.healthTimer);
    this.health.shutdown();
    this.ctx.streams.closeAll("coordinator shutting down; reconnect to another member");
    // The node first: closing its transport also ends peers' inbound raft streams, which the
    // server would otherwise wait out for the whole grace period.
    await this.node.close();
    await this.server.stop(2_000);
    this.log.info({ id: this.id }, "coordinator stopped");
  }
}
