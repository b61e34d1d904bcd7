/**
 * Partition -> owner address, published in Redis by each worker after every
 * rebalance, read by workers that receive a gRPC call for a session they do
 * not own. Kafka decides ownership; this only makes it findable.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";

import type { Redis } from "ioredis";

import { packageRoot } from "../../package-root.js";
import type { RedisKeys } from "./keys.js";

const CLAIM_PARTITION = readFileSync(join(packageRoot(), "services", "worker", "redis", "lua", "claim-partition.lua"), "utf8");

export class OwnershipRegistry {
  readonly #key: string;

  constructor(
    readonly redis: Redis,
    readonly keys: RedisKeys,
    readonly group: string,
    readonly topic: string,
  ) {
    this.#key = keys.owners(group, topic);
  }

  async publish(partitions: readonly number[], address: string): Promise<void> {
    if (partitions.length === 0) return;
    const fields: string[] = [];
    for (const p of partitions) fields.push(String(p), address);
    await this.redis.hset(this.#key, ...fields);
  }

  /**
   * Claims a newly gained partition: its new ownership epoch (fences older
   * owners' snapshot writes). Above every earlier claim, also after Redis lost
   * its data (lua/claim-partition.lua).
   */
  async claim(partition: number): Promise<number> {
    return Number(await this.redis.eval(CLAIM_PARTITION, 1, this.keys.epoch(this.group, this.topic, partition)));
  }

  async ownerOf(partition: number): Promise<string | undefined> {
    return (await this.redis.hget(this.#key, String(partition))) ?? undefined;
  }
}
