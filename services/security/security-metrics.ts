/**
 * Metrics of refused calls, registered in the worker's registry. Labels are
 * the limit or the reason and the tenant name (bounded by configuration);
 * never a token, a claim value other than the tenant, or a session id.
 */
import { Counter, type Registry } from "prom-client";

import type { AuthFailure } from "./authenticator.js";

export class SecurityMetrics {
  readonly limitRejections: Counter<"limit" | "tenant">;
  readonly authFailures: Counter<"reason">;

  constructor(registry: Registry) {
    this.limitRejections = new Counter({
      name: "streamsink_limit_rejections_total",
      help: "Requests refused with RESOURCE_EXHAUSTED, by limit (rate, streams, sessions, tenant_sessions, input_tokens, new_tokens, global_*) and tenant",
      labelNames: ["limit", "tenant"] as const,
      registers: [registry],
    });
    this.authFailures = new Counter({
      name: "streamsink_auth_failures_total",
      help: "Calls refused with UNAUTHENTICATED or PERMISSION_DENIED, by reason",
      labelNames: ["reason"] as const,
      registers: [registry],
    });
  }

  limitHit(limit: string, tenant: string): void {
    this.limitRejections.inc({ limit, tenant });
  }

  authFailed(reason: AuthFailure): void {
    this.authFailures.inc({ reason });
  }
}
