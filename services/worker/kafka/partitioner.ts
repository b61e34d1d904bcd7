/**
 * The partition of a session id: Kafka's default partitioner (murmur2 of the
 * key, as the Java client and kafkajs compute it), so the worker assigned that
 * input-topic partition is the session's owner.
 */
import { Partitioners } from "kafkajs";

const partitioner = Partitioners.DefaultPartitioner();

export function partitionOf(session: string, partitions: number): number {
  const partitionMetadata = Array.from({ length: partitions }, (_, i) => ({ partitionId: i, leader: 0, replicas: [0], isr: [0], partitionErrorCode: 0 }));
  return partitioner({ topic: "streamsink", partitionMetadata, message: { key: session, value: null } });
}
