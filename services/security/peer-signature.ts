/**
 * How a forwarded call proves it comes from another worker, and for which
 * tenant. The forwarding worker has already authenticated the client; it
 * sends the tenant with an HMAC-SHA256 over (tenant, time) keyed by the secret
 * all workers share. The owner recomputes it and compares in constant time,
 * so a client can neither forge a forwarded call nor change its tenant, and a
 * captured signature is only good for a few minutes.
 */
import { createHmac, timingSafeEqual } from "node:crypto";

export const PEER_TENANT_KEY = "x-streamsink-tenant";
export const PEER_TIME_KEY = "x-streamsink-peer-time";
export const PEER_SIGNATURE_KEY = "x-streamsink-peer-signature";

/** How far a forwarded call's time may be from the owner's clock, in seconds. */
export const PEER_SIGNATURE_MAX_SKEW_SECONDS = 300;

function mac(secret: Buffer, tenant: string, time: string): Buffer {
  return createHmac("sha256", secret).update(`streamsink-forward-v1\n${tenant}\n${time}`).digest();
}

/** Headers for a call forwarded on behalf of `tenant`. */
export function signForward(secret: Buffer, tenant: string, nowSeconds = Math.floor(Date.now() / 1000)): Record<string, string> {
  const time = String(nowSeconds);
  return { [PEER_TENANT_KEY]: tenant, [PEER_TIME_KEY]: time, [PEER_SIGNATURE_KEY]: mac(secret, tenant, time).toString("hex") };
}

/** True when the signature matches the tenant and time, and the time is recent. */
export function verifyForward(secret: Buffer, tenant: string, time: string, signature: string, nowSeconds = Math.floor(Date.now() / 1000)): boolean {
  if (!/^\d{1,12}$/.test(time) || Math.abs(nowSeconds - Number(time)) > PEER_SIGNATURE_MAX_SKEW_SECONDS) return false;
  if (!/^[0-9a-f]{64}$/.test(signature)) return false;
  return timingSafeEqual(Buffer.from(signature, "hex"), mac(secret, tenant, time));
}
