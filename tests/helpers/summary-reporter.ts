/**
 * Prints one plain closing line, "Tests: N passed, N failed[, N skipped]",
 * after vitest's own summary, so CI logs carry a runner-neutral result line.
 */
import type { Reporter, RunnerTask, RunnerTestFile } from "vitest/node";

function count(tasks: readonly RunnerTask[], acc: { passed: number; failed: number; skipped: number }): void {
  for (const t of tasks) {
    if (t.type === "suite") {
      count(t.tasks, acc);
      if (t.result?.state === "fail" && t.tasks.length === 0) acc.failed++;
    } else if (t.mode === "skip" || t.mode === "todo") acc.skipped++;
    else if (t.result?.state === "pass") acc.passed++;
    else acc.failed++;
  }
}

export default class SummaryReporter implements Reporter {
  onFinished(files: readonly RunnerTestFile[] = [], errors: readonly unknown[] = []): void {
    const acc = { passed: 0, failed: 0, skipped: 0 };
    for (const f of files) {
      count(f.tasks, acc);
      if (f.result?.state === "fail" && f.tasks.length === 0) acc.failed++;
    }
    acc.failed += errors.length;
    const skipped = acc.skipped > 0 ? `, ${acc.skipped} skipped` : "";
    process.stdout.write(`\nTests: ${acc.passed} passed, ${acc.failed} failed${skipped}\n`);
  }
}
