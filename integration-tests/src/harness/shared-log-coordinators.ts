// Coordinator endpoints for multi-site tests: each node runs the real intent state machine,
// Authenticator and gRPC services (FederationService, SiteSyncService); every proposal becomes
// the next entry of one shared in-test log applied on every node in order — a stand-in for the
// Raft group until the raft-backed coordinator process is available. Nodes can be stopped and
// started again on the same port (their state survives, as a coordinator's would on disk).
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { api, auth, intent } from "@isthmus/federation";
import { EntryType } from "@isthmus/federation/raft";
import { federationpb, type StartedServer, silentLogger, sitesyncpb, startGrpcServer } from "@isthmus/schema";

export class SharedLogGroup {
  private readonly machines: intent.IntentStateMachine[] = [];
  private index = 0;
  readonly nodes: CoordinatorNode[] = [];

  static async start(size: number, keyDir: string): Promise<SharedLogGroup> {
    const g = new SharedLogGroup();
    for (let i = 0; i < size; i++) g.nodes.push(await CoordinatorNode.create(g, `c${i + 1}`, keyDir));
    for (const n of g.nodes) await n.start();
    return g;
  }

  get addresses(): string[] {
    return this.nodes.map((n) => n.address);
  }

  replicator(sm: intent.IntentStateMachine, nodeId: string, address: () => string): api.Replicator {
    this.machines.push(sm);
    const unsupported = async () => {
      throw new api.UnsupportedError("membership changes are not part of the shared-log stand-in");
    };
    return {
      nodeId,
      propose: async (data) => {
        const entry = { term: 1, index: ++this.index, type: EntryType.Normal, data };
        let mine: intent.ApplyResult | undefined;
        for (const m of this.machines) {
          const r = m.apply(entry);
          if (m === sm) mine = r;
        }
        return mine!;
      },
      read: async () => {},
      status: () => ({
        nodeId,
        leaderId: nodeId,
        leaderAddress: address(),
        term: 1,
        commitIndex: this.index,
        appliedIndex: sm.index,
        role: "leader",
        members: [],
      }),
      addMember: unsupported,
      removeMember: unsupported,
    };
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop()));
  }

  async startAll(): Promise<void> {
    for (const n of this.nodes) await n.start();
  }
}

export class CoordinatorNode {
  private started: StartedServer | undefined;
  private port = 0;

  private constructor(
    readonly sm: intent.IntentStateMachine,
    private readonly ctx: api.ServiceContext,
  ) {}

  static async create(group: SharedLogGroup, id: string, keyDir: string): Promise<CoordinatorNode> {
    const sm = new intent.IntentStateMachine();
    let node: CoordinatorNode | undefined;
    const authn = await auth.Authenticator.fromKeyDir(keyDir, { lookupSite: (s) => sm.site(s) });
    const ctx = new api.ServiceContext({
      sm,
      replicator: group.replicator(sm, id, () => node?.address ?? ""),
      auth: authn,
      issuer: await auth.OnboardingTokenIssuer.fromKeyDir(keyDir),
      siteAudience: authn.settings.siteAudience,
      log: silentLogger(),
      limits: { progressIntervalMs: 50 },
    });
    node = new CoordinatorNode(sm, ctx);
    return node;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const server = new Server();
    server.addService(federationpb.FederationServiceService, api.federationService(this.ctx));
    server.addService(sitesyncpb.SiteSyncServiceService, api.siteSyncService(this.ctx));
    this.started = await startGrpcServer(
      server,
      `127.0.0.1:${this.port}`,
      ServerCredentials.createInsecure(),
      silentLogger(),
    );
    this.port = this.started.port;
  }

  async stop(): Promise<void> {
    this.ctx.streams.closeAll("coordinator stopped");
    this.started?.server.forceShutdown();
    this.started = undefined;
  }
}
