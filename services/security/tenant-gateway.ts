/**
 * The gateway the gRPC server talks to when tenants are in force: it turns
 * the client's session id into the tenant's session key (tenant.ts) before
 * anything below sees it, and back in what it returns, so every layer under
 * it (host, Kafka log, snapshots, forwarding) works on keys a tenant cannot
 * choose outside its own prefix. It also spends the tenant's request rate
 * (not for calls forwarded by another worker: the entry worker counted them)
 * and reports every limit refusal from below for the metric.
 */
import type { GatewayCallContext, GatewaySessionInfo, SessionGateway } from "../grpc/session-gateway.js";
import { LimitExceededError } from "../worker/errors.js";
import type { SessionEvent, SessionOp } from "../worker/operations.js";
import type { TenantLimiter } from "./tenant-limiter.js";
import { DEFAULT_TENANT, sessionIdOf, sessionKey } from "./tenant.js";

export class TenantGateway implements SessionGateway {
  readonly #inner: SessionGateway;
  readonly #limiter: TenantLimiter;
  readonly #rejected: (limit: string, tenant: string) => void;

  constructor(inner: SessionGateway, limiter: TenantLimiter, rejected: (limit: string, tenant: string) => void = () => undefined) {
    this.#inner = inner;
    this.#limiter = limiter;
    this.#rejected = rejected;
  }

  get selfAddress(): string {
    return this.#inner.selfAddress;
  }

  async execute(op: SessionOp, emit: (event: SessionEvent) => void, signal?: AbortSignal, context: GatewayCallContext = { forwarded: false }): Promise<void> {
    const tenant = context.tenant ?? DEFAULT_TENANT;
    if (!context.forwarded) this.#limiter.takeRequest(tenant);
    const key = sessionKey(tenant, op.session);
    const id = op.session;
    try {
      await this.#inner.execute({ ...op, session: key }, (event) => emit({ ...event, session: id }), signal, { ...context, tenant });
    } catch (err) {
      if (err instanceof LimitExceededError) this.#rejected(err.limit, tenant);
      throw err;
    }
  }

  async getSession(id: string, context: GatewayCallContext = { forwarded: false }): Promise<GatewaySessionInfo | undefined> {
    const tenant = context.tenant ?? DEFAULT_TENANT;
    if (!context.forwarded) this.#limiter.takeRequest(tenant);
    const info = await this.#inner.getSession(sessionKey(tenant, id), { ...context, tenant });
    return info && { ...info, session: sessionIdOf(tenant, info.session) };
  }
}
