/**
 * How many cases each fuzz property runs: a bounded number in CI, 100k or
 * more in the soak (`npm run fuzz` sets STREAMSINK_FUZZ_RUNS). The seed is
 * printed by fast-check on a failure, so any counterexample can be replayed.
 */
export const RUNS = Number(process.env.STREAMSINK_FUZZ_RUNS ?? 2000);

/** Per-test timeout: generous per case so a soak is never cut short by vitest. */
export function timeoutFor(runs: number, msPerCase = 5): number {
  return Math.max(120_000, runs * msPerCase);
}

/** Counts cases actually run, printed at the end of the file (the figure quoted in the notes). */
export class CaseCounter {
  readonly counts = new Map<string, number>();
  hit(name: string): void {
    this.counts.set(name, (this.counts.get(name) ?? 0) + 1);
  }
  report(file: string): void {
    for (const [name, n] of this.counts) process.stdout.write(`fuzz ${file} ${name}: ${n} cases\n`);
  }
}
