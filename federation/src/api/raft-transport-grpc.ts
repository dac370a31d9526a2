// raft-ts over gRPC: a Transport that keeps one client stream (RaftTransportService.Stream) open to
// every peer and writes batches of messages on it, plus the server half that feeds incoming
// batches to the node. Raft tolerates loss, so the sender never blocks: a full per-peer queue drops
// and counts, and a broken stream is reopened with exponential backoff and jitter.
import {
  type ChannelCredentials,
  type Client,
  type ClientOptions,
  type ClientWritableStream,
  connectivityState,
  type handleClientStreamingCall,
  makeGenericClientConstructor,
  type ServiceDefinition,
  type ServiceError,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { raftpb } from "@isthmus/schema";
import {
  type Message,
  type NodeId,
  type RaftLogger,
  silentRaftLogger,
  type Transport,
} from "../raft/index.js";
import type { RaftWireError } from "./raft-wire.js";
import { decodeRaftBatch, encodeRaftBatch } from "./raft-wire-codec.js";

export interface BackoffOptions {
  /** First retry delay after a stream fails. Default 50 ms. */
  initialMs?: number;
  /** Ceiling for the doubling delay. Default 1 000 ms (a restarted peer is heard from within about one election timeout). */
  maxMs?: number;
  /** Each delay is scaled by a random factor in [1 - jitter, 1 + jitter]. Default 0.2. */
  jitter?: number;
}

export interface GrpcRaftTransportOptions {
  /** This node's id; incoming messages addressed to anyone else are dropped. */
  id: NodeId;
  /** Client credentials for dialing peers (insecure, TLS or mTLS), made by the caller. */
  credentials: ChannelCredentials;
  channelOptions?: Partial<ClientOptions>;
  /** Messages queued per peer before new ones are dropped. Default 4 096. */
  maxQueuedPerPeer?: number;
  /** Messages per batch written on a stream. Default 512. */
  maxBatchMessages?: number;
  /** Approximate bytes of entry and snapshot data per batch. Default 4 MiB (under gRPC's 16 MiB limit). */
  maxBatchBytes?: number;
  backoff?: BackoffOptions;
  logger?: RaftLogger;
  /** Source of jitter; Math.random by default. */
  random?: () => number;
}

export interface GrpcRaftTransportStats {
  sent: number;
  received: number;
  droppedQueueFull: number;
  droppedUnknownPeer: number;
  /** Queued messages discarded when a stream to their peer broke (raft resends what matters). */
  droppedStreamBroken: number;
  malformed: number;
  misaddressed: number;
  streamFailures: number;
}

const DEFAULT_CHANNEL_OPTIONS: Partial<ClientOptions> = {
  // Every write of a client crosses this channel twice on its critical path, so per-message work
  // that buys nothing here is off: channelz statistics (counters and a timestamp per message) and
  // grpc-js retries (which keep each message of a stream in a retry buffer; a broken stream is
  // reopened by PeerLink with its own backoff, and raft resends what was lost).
  "grpc.enable_channelz": 0,
  "grpc.enable_retries": 0,
  "grpc.max_send_message_length": 16 * 1024 * 1024,
  "grpc.max_receive_message_length": 16 * 1024 * 1024,
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 5_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 1_000,
};

/**
 * Options for a gRPC Server that carries only RaftTransportService (`new Server(RAFT_SERVER_OPTIONS)`):
 * batches up to 16 MiB, and no channelz bookkeeping per received message.
 */
export const RAFT_SERVER_OPTIONS = {
  "grpc.enable_channelz": 0,
  "grpc.max_receive_message_length": 16 * 1024 * 1024,
  "grpc.max_send_message_length": 16 * 1024 * 1024,
} as const;

/**
 * RaftTransportService as generated (same path, same isthmus.v1.RaftMessageBatch on the wire), with
 * the batch encoded from and decoded to raft-ts messages directly (raft-wire-codec.ts) instead of
 * through the generated message objects: a peer using the generated stubs interoperates.
 */
const RAFT_TRANSPORT_SERVICE = {
  stream: {
    path: raftpb.RaftTransportServiceService.stream.path,
    requestStream: true,
    responseStream: false,
    requestSerialize: (messages: readonly Message[]): Buffer => encodeRaftBatch(messages),
    requestDeserialize: (bytes: Buffer): Array<Message | RaftWireError> => decodeRaftBatch(bytes),
    responseSerialize: raftpb.RaftTransportServiceService.stream.responseSerialize,
    responseDeserialize: raftpb.RaftTransportServiceService.stream.responseDeserialize,
  },
} satisfies ServiceDefinition;

interface RaftStreamClient extends Client {
  stream(
    callback: (error: ServiceError | null, response: raftpb.RaftSendAck) => void,
  ): ClientWritableStream<readonly Message[]>;
}

const RaftStreamClient = makeGenericClientConstructor(
  RAFT_TRANSPORT_SERVICE,
  "isthmus.v1.RaftTransportService",
) as unknown as new (
  address: string,
  credentials: ChannelCredentials,
  options?: Partial<ClientOptions>,
) => RaftStreamClient;

function messageBytes(m: Message): number {
  let n = 64 + m.context.byteLength + (m.snapshotChunk?.byteLength ?? 0);
  for (const e of m.entries) n += 24 + e.data.byteLength;
  return n;
}

class PeerLink {
  private queue: Message[] = [];
  private client: RaftStreamClient | undefined;
  private call: ClientWritableStream<readonly Message[]> | undefined;
  private failures = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private waitingDrain = false;
  private flushScheduled = false;
  private closed = false;

  constructor(
    readonly id: NodeId,
    readonly address: string,
    private readonly t: GrpcRaftTransport,
  ) {}

  enqueue(m: Message): void {
    if (this.queue.length >= this.t.maxQueued) {
      this.t.counters.droppedQueueFull++;
      return;
    }
    this.queue.push(m);
    if (!this.flushScheduled) {
      // Everything sent in this callback (a Ready's messages are sent together) goes out as one
      // batch, written at its end rather than a loop turn later: each write of a single client
      // crosses this hop twice on its critical path (append out, ack back).
      this.flushScheduled = true;
      queueMicrotask(() => {
        this.flushScheduled = false;
        this.flush();
      });
    }
  }

  private flush(): void {
    if (this.closed || this.retryTimer || this.waitingDrain || this.queue.length === 0) return;
    const call = this.call ?? this.open();
    while (this.queue.length > 0) {
      let bytes = 0;
      let n = 0;
      while (n < this.queue.length && n < this.t.maxBatchMessages) {
        const b = messageBytes(this.queue[n]!);
        if (n > 0 && bytes + b > this.t.maxBatchBytes) break;
        bytes += b;
        n++;
      }
      const batch = this.queue.splice(0, n);
      this.t.counters.sent += batch.length;
      const more = call.write(batch);
      if (!more) {
        this.waitingDrain = true;
        call.once("drain", () => {
          this.waitingDrain = false;
          this.flush();
        });
        return;
      }
    }
    if (this.client?.getChannel().getConnectivityState(false) === connectivityState.READY) this.failures = 0;
  }

  private open(): ClientWritableStream<readonly Message[]> {
    if (!this.client) {
      this.client = new RaftStreamClient(this.address, this.t.credentials, this.t.channelOptions);
    }
    const call = this.client.stream((err) => {
      if (this.call === call) this.call = undefined;
      this.waitingDrain = false;
      if (this.closed) return;
      if (err) this.failed(err);
      else if (this.queue.length > 0) this.flush();
    });
    // Errors also arrive through the callback above; this keeps them from being unhandled events.
    call.on("error", () => {});
    this.call = call;
    return call;
  }

  private failed(err: Error): void {
    this.failures++;
    this.t.counters.streamFailures++;
    this.t.counters.droppedStreamBroken += this.queue.length;
    this.queue = [];
    const delay = this.t.backoffDelay(this.failures);
    const log = this.failures === 1 ? this.t.log.warn : this.t.log.debug;
    log.call(
      this.t.log,
      {
        peer: this.id,
        address: this.address,
        err: err.message,
        retryInMs: Math.round(delay),
        failures: this.failures,
      },
      "raft transport: stream to peer failed; will retry",
    );
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.flush();
    }, delay);
    this.retryTimer.unref();
  }

  close(): void {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.call?.end();
    this.call = undefined;
    this.client?.close();
    this.queue = [];
  }
}

export class GrpcRaftTransport implements Transport {
  readonly counters: GrpcRaftTransportStats = {
    sent: 0,
    received: 0,
    droppedQueueFull: 0,
    droppedUnknownPeer: 0,
    droppedStreamBroken: 0,
    malformed: 0,
    misaddressed: 0,
    streamFailures: 0,
  };
  readonly id: NodeId;
  readonly credentials: ChannelCredentials;
  readonly channelOptions: Partial<ClientOptions>;
  readonly maxQueued: number;
  readonly maxBatchMessages: number;
  readonly maxBatchBytes: number;
  readonly log: RaftLogger;
  private readonly backoff: Required<BackoffOptions>;
  private readonly random: () => number;
  private readonly peers = new Map<NodeId, PeerLink>();
  private readonly inbound = new Set<() => void>();
  private handler: ((m: Message) => void) | undefined;
  private closed = false;

  constructor(opts: GrpcRaftTransportOptions) {
    this.id = opts.id;
    this.credentials = opts.credentials;
    this.channelOptions = { ...DEFAULT_CHANNEL_OPTIONS, ...opts.channelOptions };
    this.maxQueued = opts.maxQueuedPerPeer ?? 4096;
    this.maxBatchMessages = opts.maxBatchMessages ?? 512;
    this.maxBatchBytes = opts.maxBatchBytes ?? 4 * 1024 * 1024;
    this.backoff = {
      initialMs: opts.backoff?.initialMs ?? 50,
      maxMs: opts.backoff?.maxMs ?? 1000,
      jitter: opts.backoff?.jitter ?? 0.2,
    };
    this.random = opts.random ?? Math.random;
    this.log = opts.logger ?? silentRaftLogger;
    for (const [k, v] of Object.entries({
      maxQueuedPerPeer: this.maxQueued,
      maxBatchMessages: this.maxBatchMessages,
      maxBatchBytes: this.maxBatchBytes,
    })) {
      if (!Number.isSafeInteger(v) || v <= 0)
        throw new RangeError(`raft transport: ${k} must be a positive integer`);
    }
  }

  /** The gRPC service to add to this node's server: `server.addService(t.service.definition, t.service.implementation)`. */
  get service(): {
    definition: ServiceDefinition;
    implementation: UntypedServiceImplementation;
  } {
    const stream: handleClientStreamingCall<Array<Message | RaftWireError>, raftpb.RaftSendAck> = (
      call,
      callback,
    ) => {
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        this.inbound.delete(finish);
        callback(null, {});
      };
      this.inbound.add(finish);
      call.on("data", (batch: Array<Message | RaftWireError>) => this.receive(batch));
      call.on("end", finish);
      call.on("error", () => {
        done = true;
        this.inbound.delete(finish);
      });
    };
    return { definition: RAFT_TRANSPORT_SERVICE, implementation: { stream } };
  }

  /** Delay before retry number `failures` (1-based): doubling from initialMs up to maxMs, jittered. */
  backoffDelay(failures: number): number {
    const base = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** Math.min(failures - 1, 30));
    return Math.round(base * (1 - this.backoff.jitter + 2 * this.backoff.jitter * this.random()));
  }

  send(messages: Message[]): void {
    if (this.closed) return;
    for (const m of messages) {
      const link = this.peers.get(m.to);
      if (!link) {
        this.counters.droppedUnknownPeer++;
        continue;
      }
      link.enqueue(m);
    }
  }

  onMessage(handler: (m: Message) => void): void {
    this.handler = handler;
  }

  addPeer(id: NodeId, address: string): void {
    if (id === this.id) return;
    const old = this.peers.get(id);
    if (old && old.address === address) return;
    old?.close();
    this.peers.set(id, new PeerLink(id, address, this));
  }

  removePeer(id: NodeId): void {
    this.peers.get(id)?.close();
    this.peers.delete(id);
  }

  peerAddresses(): Record<NodeId, string> {
    return Object.fromEntries([...this.peers.values()].map((p) => [p.id, p.address]));
  }

  stats(): GrpcRaftTransportStats {
    return { ...this.counters };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.peers.values()) p.close();
    this.peers.clear();
    // End inbound streams from our side so the server can shut down without waiting them out.
    for (const finish of [...this.inbound]) finish();
  }

  /** A decoded batch: messages, and the errors of those that were malformed (decodeRaftBatch). */
  private receive(batch: Array<Message | RaftWireError>): void {
    if (this.closed) return;
    for (const m of batch) {
      if (m instanceof Error) {
        this.counters.malformed++;
        if (this.counters.malformed === 1 || this.counters.malformed % 1000 === 0) {
          this.log.warn(
            { err: m.message, total: this.counters.malformed },
            "raft transport: dropped malformed message",
          );
        }
        continue;
      }
      if (m.to !== this.id) {
        this.counters.misaddressed++;
        continue;
      }
      this.counters.received++;
      this.handler?.(m);
    }
  }
}
