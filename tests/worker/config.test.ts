import { describe, expect, it } from "vitest";

import { ConfigError, loadWorkerConfig } from "../../services/worker/config.js";
import { modelDir } from "../helpers/fixtures.js";

describe("worker configuration", () => {
  it("has embedded defaults: bundled model, gRPC on 0.0.0.0:50051, no Kafka, no Redis", () => {
    const c = loadWorkerConfig([], {});
    expect(c).toMatchObject({ grpcHost: "0.0.0.0", grpcPort: 50051, metricsPort: 9464, kafkaBrokers: [], redisUrl: undefined, policy: "sinks", sinks: 4, window: 1020 });
    expect(c.model).toMatch(/models\/streamsink-llama-7m$/);
  });

  it("reads STREAMSINK_* env and lets flags win", () => {
    const env = { STREAMSINK_GRPC_PORT: "6000", STREAMSINK_WINDOW: "60", STREAMSINK_KAFKA_BROKERS: "127.0.0.1:9092,127.0.0.1:9093", STREAMSINK_REDIS_URL: "redis://127.0.0.1:6379" };
    const c = loadWorkerConfig(["--grpc-port", "7000", "--model", modelDir("mpt")], env);
    expect(c).toMatchObject({ grpcPort: 7000, window: 60, kafkaBrokers: ["127.0.0.1:9092", "127.0.0.1:9093"], redisUrl: "redis://127.0.0.1:6379" });
    expect(c.model).toBe(modelDir("mpt"));
  });

  it("passes the CUDA dtype through, auto leaving it to the engine", () => {
    expect(loadWorkerConfig(["--backend", "cuda", "--dtype", "fp16"], {})).toMatchObject({ backend: "cuda", dtype: "fp16" });
    expect(loadWorkerConfig([], { STREAMSINK_DTYPE: "fp32" }).dtype).toBe("fp32");
    expect(loadWorkerConfig([], {}).dtype).toBeUndefined();
  });

  const bad: Array<[string[], Record<string, string>, RegExp]> = [
    [["--grpc-port", "70000"], {}, /--grpc-port \/ STREAMSINK_GRPC_PORT must be an integer from 0 to 65535/],
    [[], { STREAMSINK_GRPC_PORT: "abc" }, /STREAMSINK_GRPC_PORT.*"abc"/],
    [["--policy", "lru"], {}, /--policy \/ STREAMSINK_POLICY must be one of sinks, window, recompute, dense/],
    [["--backend", "tpu"], {}, /--backend/],
    [["--dtype", "int8"], {}, /--dtype \/ STREAMSINK_DTYPE must be one of bf16, fp16, fp32, auto/],
    [["--window", "0"], {}, /--window/],
    [["--kafka-brokers", "localhost"], {}, /--kafka-brokers.*"localhost" is not host:port/],
    [["--redis-url", "http://x"], {}, /--redis-url \/ STREAMSINK_REDIS_URL must start with redis:\/\//],
    [["--model", "/nonexistent"], {}, /--model \/ STREAMSINK_MODEL: \/nonexistent is not a model directory/],
    [["--kafka-input-topic", "bad topic"], {}, /not a valid Kafka topic name/],
    [["--frobnicate"], {}, /Unknown option '--frobnicate'/],
  ];
  for (const [argv, env, message] of bad) {
    it(`rejects ${JSON.stringify(argv)} ${JSON.stringify(env)} naming the setting`, () => {
      expect(() => loadWorkerConfig(argv, env)).toThrow(ConfigError);
      expect(() => loadWorkerConfig(argv, env)).toThrow(message);
    });
  }
});
