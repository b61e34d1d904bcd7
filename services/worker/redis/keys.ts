/**
 * Every Redis key streamsink uses is built here.
 *   {prefix}:snap:{session}           session snapshot (envelope bytes)
 *   {prefix}:owners:{group}:{topic}   hash: input partition -> owner gRPC address
 */
export class RedisKeys {
  constructor(readonly prefix = "streamsink") {}

  snapshot(session: string): string {
    return `${this.prefix}:snap:${session}`;
  }

  owners(group: string, topic: string): string {
    return `${this.prefix}:owners:${group}:${topic}`;
  }
}
