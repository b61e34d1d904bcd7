/**
 * PartitionOffsets: what may be committed. A closed session's close record is
 * held until its snapshot delete is durable; the output bound a commit
 * carries is at or below the output of every record from the committed
 * offset on.
 */
import { describe, expect, it } from "vitest";

import { PartitionOffsets } from "../../services/worker/kafka/offset-tracker.js";

describe("PartitionOffsets", () => {
  it("commits past a close only once the closed session's snapshot is deleted", () => {
    const o = new PartitionOffsets();
    o.started(0n);
    o.finished(0n, "a");
    o.snapshotted("a", 0n);
    o.started(1n);
    o.finished(1n, "a");
    o.closed("a", 1n); // the close record
    o.started(2n);
    o.finished(2n, "b");
    o.snapshotted("b", 2n);
    expect(o.committable()).toBe(1n); // the close is read again by a new owner
    expect(o.pendingCloses()).toEqual([["a", 1n]]);
    o.deleted("a", 0n); // another close's delete: no effect
    expect(o.committable()).toBe(1n);
    o.deleted("a", 1n);
    expect(o.committable()).toBe(3n);
    expect(o.pendingCloses()).toEqual([]);
  });

  it("carries the lowest output bound of the records from the committed offset on", () => {
    const o = new PartitionOffsets();
    o.started(5n, 100n);
    o.started(6n, 120n);
    o.abandon(5n); // redelivered later, with a later bound
    o.started(5n, 140n);
    // Record 6 started with bound 120, before record 5's second start.
    expect(o.outputBoundAt(5n, 200n)).toBe(120n);
    expect(o.outputBoundAt(6n, 200n)).toBe(120n);
    // Nothing from offset 7 on has started: the current bound.
    expect(o.outputBoundAt(7n, 200n)).toBe(200n);
    // Entries below a commit are forgotten.
    expect(o.outputBoundAt(5n, 200n)).toBe(200n);
  });
});
