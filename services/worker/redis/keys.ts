/**
 * Every Redis key streamsink uses is built here.
 *   {prefix}:snap:{session}           session snapshot (envelope bytes)
 *   {prefix}:owners:{group}:{topic}   hash: input partition -> owner gRPC address
 *   {prefix}:epoch:{group}:{topic}:{p} ownership epoch of input partition p (INCR by each new owner)
 */
export class RedisKeys {
  constructor(readonly prefix = "streamsink") {}

  snapshot(session: string): string {
    return `${this.prefix}:snap:${session}`;
  }

  epoch(group: string, topic: string, partition: number): string {
    return `${this.prefix}:epoch:${group}:${topic}:${partition}`;
  }

  owners(group: string, topic: string): string {
    return `${this.prefix}:owners:${group}:${topic}`;
  }
}
