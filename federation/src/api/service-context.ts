// What both gRPC services share: the state machine, the replicator, auth, limits, and the
// helpers that turn a handler's promise into a gRPC answer and a command into a log entry.
import type { ServerUnaryCall, sendUnaryData } from "@grpc/grpc-js";
import type { federationpb, Logger } from "@isthmus/schema";
import { type ApplyOk, encodeCommand, type IntentStateMachine } from "../intent/index.js";
import type { CallAuth, OnboardingIssuer } from "./authenticator.js";
import { isInternal, toServiceError } from "./grpc-errors.js";
import { DEFAULT_STREAM_LIMITS, OpenStreams, type StreamLimits } from "./intent-stream.js";
import type { Replicator } from "./replicator.js";

export interface ServiceDeps {
  sm: IntentStateMachine;
  replicator: Replicator;
  auth: CallAuth;
  log: Logger;
  /** Mints onboarding tokens for AddSite; without it AddSite is refused (FAILED_PRECONDITION). */
  issuer?: OnboardingIssuer;
  /** JWT audience sites put in their own tokens (returned by Join). */
  siteAudience?: string;
  /** Default onboarding token lifetime in seconds. */
  onboardingTtlSec?: number;
  limits?: Partial<StreamLimits>;
  /** Wall clock (unix ms) stamped on proposals; Date.now by default. */
  now?: () => number;
}

export class ServiceContext {
  readonly limits: StreamLimits;
  readonly streams: OpenStreams;
  readonly now: () => number;

  constructor(readonly deps: ServiceDeps) {
    this.limits = { ...DEFAULT_STREAM_LIMITS, ...deps.limits };
    this.streams = new OpenStreams(this.limits.maxStreams);
    this.now = deps.now ?? Date.now;
  }

  get sm(): IntentStateMachine {
    return this.deps.sm;
  }

  /** Proposes a command and resolves with its successful result; a refusal is thrown. */
  async write(cmd: Omit<federationpb.IntentCommand, "proposedUnixMs">): Promise<ApplyOk> {
    const r = await this.deps.replicator.propose(encodeCommand(cmd, this.now()));
    if (!r.ok) throw r.error;
    return r;
  }

  /** Wraps an async unary handler: resolve → response, throw → mapped gRPC status. */
  unary<Req, Res>(method: string, handler: (call: ServerUnaryCall<Req, Res>) => Promise<Res>) {
    return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      handler(call).then(
        (res) => callback(null, res),
        (err: unknown) => {
          const se = toServiceError(err);
          if (isInternal(se)) this.deps.log.error({ err, method }, "call failed");
          else this.deps.log.debug({ method, code: se.code, details: se.details }, "call refused");
          callback(se);
        },
      );
    };
  }
}
