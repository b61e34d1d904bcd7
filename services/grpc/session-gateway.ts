/**
 * What the gRPC server needs from the worker: run an operation on a session
 * wherever the session lives, and describe a session. The server knows
 * nothing about ownership; the worker hands it a gateway that runs ops on
 * the local SessionHost, or (with Kafka) forwards them to the session's
 * owner.
 */
import type { SessionOp, SessionEvent } from "../worker/operations.js";
import type { HostedSessionInfo, SessionHost } from "../worker/session-host.js";

/**
 * Request header a worker sets on a call it forwards to a session's owner.
 * The owner must not forward such a call again: if it no longer owns the
 * session, ownership is moving and the call is UNAVAILABLE.
 */
export const FORWARDED_METADATA_KEY = "x-streamsink-forwarded";

/** What the gRPC server knows about the call behind an op. */
export interface GatewayCallContext {
  /** The call carried FORWARDED_METADATA_KEY: it came from another worker. */
  forwarded: boolean;
  /** The caller's tenant (services/security/tenant.ts); absent = the default tenant. */
  tenant?: string;
}

export type GatewaySessionInfo = HostedSessionInfo & {
  /** gRPC address (host:port) of the worker that owns the session. */
  owner: string;
};

export interface SessionGateway {
  /** gRPC address (host:port) at which clients and other workers reach this worker. */
  readonly selfAddress: string;
  /**
   * Runs `op` after the ops queued before it on the same session, delivering
   * its events to `emit` as they happen; resolves once the op has finished.
   * Rejects with a worker or engine error (mapped by grpc-status.ts). When
   * `signal` fires, a generation stops after the token in flight and still
   * finishes (reason "cancelled").
   */
  execute(op: SessionOp, emit: (event: SessionEvent) => void, signal?: AbortSignal, context?: GatewayCallContext): Promise<void>;
  /** The session's state, or undefined when no such session exists. */
  getSession(id: string, context?: GatewayCallContext): Promise<GatewaySessionInfo | undefined>;
}

/** A gateway for a worker that owns every session itself (no Kafka configured). */
export class LocalSessionGateway implements SessionGateway {
  readonly host: SessionHost;
  /** Set once the gRPC server is bound (the port may be chosen by the OS). */
  selfAddress: string;

  constructor(host: SessionHost, selfAddress = "") {
    this.host = host;
    this.selfAddress = selfAddress;
  }

  execute(op: SessionOp, emit: (event: SessionEvent) => void, signal?: AbortSignal): Promise<void> {
    return this.host.execute(op, emit, signal);
  }

  async getSession(id: string): Promise<GatewaySessionInfo | undefined> {
    const info = await this.host.info(id);
    return info && { ...info, owner: this.selfAddress };
  }
}
