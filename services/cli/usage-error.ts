/** A bad command line: printed with the usage text, exit status 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
  readonly code = "E_USAGE";
}

export function parseIntFlag(name: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  if (!/^-?\d+$/.test(value)) throw new UsageError(`--${name} must be an integer, got "${value}"`);
  const n = Number(value);
  if (n < min) throw new UsageError(`--${name} must be at least ${min}, got ${n}`);
  return n;
}
