/**
 * The streamsink.v1 gRPC service over real sockets: a GrpcServer on
 * 127.0.0.1:0 in front of a real SessionHost and engine (llama-gqa, CPU),
 * driven through StreamsinkClient. Every result is compared with a direct
 * engine session fed the same tokens: log-probs bitwise, greedy generations
 * token for token. Cancellation and deadlines are checked by what the
 * session holds afterwards (an append queued behind the generation only
 * completes once it has stopped), never by timing.
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

import { Client, credentials, type Metadata, type ServiceError, status as Status } from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { argmax, Engine, type Session } from "../../services/engine/index.js";
import { type GenerateEvent, StreamsinkClient, type StreamEvent } from "../../services/grpc/grpc-client.js";
import { GrpcServer } from "../../services/grpc/grpc-server.js";
import { retryAfterMs } from "../../services/grpc/grpc-status.js";
import { SERVICE_NAME } from "../../services/grpc/proto.js";
import { LocalSessionGateway, type SessionGateway } from "../../services/grpc/session-gateway.js";
import { OwnerUnavailableError } from "../../services/worker/errors.js";
import { SessionHost } from "../../services/worker/session-host.js";
import { loadGolden, modelDir } from "../helpers/fixtures.js";

const CONFIG = { policy: "sinks", sinks: 4, window: 28 } as const;
/** Far more tokens than any test lets a generation run: a generation that ends early was stopped. */
const MAX_NEW = 1_000_000;
const LIMITS = { maxNewTokens: MAX_NEW, maxInputTokens: 1 << 20 };
const RECEIVE_LIMIT = 1 << 20;
const VOCAB = 384;
const ids = loadGolden("llama-gqa").cases[0]!.ids;

/** A direct engine session with the host's configuration: the expected answers. */
class Reference {
  private constructor(readonly session: Session) {}

  static async open(engine: Engine): Promise<Reference> {
    return new Reference(await engine.openSession({ ...CONFIG, sinkToken: "model" }));
  }

  async append(tokens: number[]): Promise<number[]> {
    return Array.from((await this.session.append(tokens, { logprobs: true })).logprobs!);
  }

  /** Greedy decoding: argmax of the next-token log-probs, appended one by one. */
  async greedy(n: number): Promise<number[]> {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const token = argmax(this.session.nextLogprobs!);
      out.push(token);
      await this.session.append([token]);
    }
    return out;
  }

  close(): Promise<void> {
    return this.session.close();
  }
}

async function referenceGreedy(engine: Engine, prompt: number[], n: number): Promise<number[]> {
  const ref = await Reference.open(engine);
  await ref.append(prompt);
  const out = await ref.greedy(n);
  await ref.close();
  return out;
}

async function collect(events: AsyncIterable<GenerateEvent>): Promise<GenerateEvent[]> {
  const out: GenerateEvent[] = [];
  for await (const e of events) out.push(e);
  return out;
}

async function failure(promise: Promise<unknown>): Promise<ServiceError> {
  try {
    await promise;
  } catch (err) {
    return err as ServiceError;
  }
  throw new Error("expected the call to fail");
}

function tokensOf(events: GenerateEvent[]): number[] {
  return events.flatMap((e) => (e.type === "token" ? [e.id] : []));
}

function finishedOf(events: GenerateEvent[]): Extract<GenerateEvent, { type: "finished" }> {
  const last = events[events.length - 1];
  if (last?.type !== "finished") throw new Error("the generation did not end with a finished message");
  return last;
}

describe("gRPC service (llama-gqa, real sockets)", () => {
  let engine: Engine;
  let host: SessionHost;
  let gateway: LocalSessionGateway;
  let server: GrpcServer;
  let client: StreamsinkClient;
  let address: string;

  beforeAll(async () => {
    engine = await Engine.load(modelDir("llama-gqa"), { backend: "cpu" });
    host = new SessionHost(engine, { ...CONFIG }, LIMITS);
    gateway = new LocalSessionGateway(host);
    server = new GrpcServer(gateway, { maxReceiveMessageBytes: RECEIVE_LIMIT });
    const port = await server.start("127.0.0.1", 0);
    address = `127.0.0.1:${port}`;
    gateway.selfAddress = address;
    server.setServing(true);
    client = await StreamsinkClient.connect(address);
  });

  afterAll(async () => {
    client?.close();
    await server?.stop(1000);
    await host?.close();
    await engine?.close();
  });

  it("appends token ids and text; log-probs equal a direct engine session bitwise", async () => {
    const ref = await Reference.open(engine);
    const head = ids.slice(0, 40);
    const first = await client.append({ sessionId: "append", input: { tokens: head }, returnLogprobs: true, requestId: "r-1" });
    expect(first).toMatchObject({ requestId: "r-1", tokensAppended: 40, tokenIds: head, tokensSeen: 40 });
    expect(first.logprobs).toEqual(await ref.append(head));
    expect(Number.isNaN(first.logprobs[0])).toBe(true);

    const text = " the quick brown fox jumps";
    const textIds = engine.tokenizer!.encode(text);
    const second = await client.append({ sessionId: "append", input: { text }, returnLogprobs: true });
    expect(second.tokenIds).toEqual(textIds);
    expect(second.tokensSeen).toBe(40 + textIds.length);
    expect(second.logprobs).toEqual(await ref.append(textIds));
    expect(second.requestId).toMatch(/^[0-9a-f-]{36}$/);

    const third = await client.append({ sessionId: "append", input: { tokens: ids.slice(40, 45) } });
    expect(third.logprobs).toEqual([]);
    await ref.close();
  });

  it("streams a greedy generation equal to the engine's, token for token and in order", async () => {
    const prompt = ids.slice(0, 20);
    const expected = await referenceGreedy(engine, prompt, 24);
    const events = await collect(client.generate({ sessionId: "greedy", prompt: { tokens: prompt }, maxNewTokens: 24, requestId: "g-1" }));

    expect(events).toHaveLength(25);
    expect(events.slice(0, 24).map((e) => (e.type === "token" ? e.index : -1))).toEqual([...Array(24).keys()]);
    expect(tokensOf(events)).toEqual(expected);
    expect(finishedOf(events)).toMatchObject({
      requestId: "g-1",
      reason: "length",
      promptTokens: 20,
      generatedTokens: 24,
      text: engine.tokenizer!.decode(expected),
    });
    expect((await client.getSession("greedy")).tokensSeen).toBe(44);

    // A second generation without a prompt continues from the session's state.
    const ref = await Reference.open(engine);
    await ref.append(prompt);
    await ref.greedy(24);
    const more = await ref.greedy(10);
    await ref.close();
    const next = await collect(client.generate({ sessionId: "greedy", maxNewTokens: 10 }));
    expect(tokensOf(next)).toEqual(more);
    expect(finishedOf(next)).toMatchObject({ promptTokens: 0, generatedTokens: 10 });
  });

  it("ends at a stop sequence with the text cut before it", async () => {
    const prompt = ids.slice(50, 70);
    const greedy = await referenceGreedy(engine, prompt, 60);
    const tokenizer = engine.tokenizer!;
    // A printable piece that first shows up in the text at token k (k >= 3).
    let stop = "";
    let k = -1;
    for (let i = 3; i < greedy.length && k < 0; i++) {
      const piece = tokenizer.decode([greedy[i]!]);
      if (/^[ -~]{2,}$/.test(piece) && !tokenizer.decode(greedy.slice(0, i)).includes(piece)) {
        stop = piece;
        k = i;
      }
    }
    expect(k).toBeGreaterThan(0);
    const full = tokenizer.decode(greedy.slice(0, k + 1));

    const events = await collect(client.generate({ sessionId: "stop", prompt: { tokens: prompt }, maxNewTokens: 60, stop: ["never-generated-xyz", stop] }));
    expect(tokensOf(events)).toEqual(greedy.slice(0, k + 1));
    expect(finishedOf(events)).toMatchObject({
      reason: "stop",
      generatedTokens: k + 1,
      text: full.slice(0, full.indexOf(stop)),
    });
  });

  it("stops decoding when the client cancels a Generate mid-stream", async () => {
    const prompt = ids.slice(0, 16);
    await client.append({ sessionId: "cancel", input: { tokens: prompt } });
    const expected = await referenceGreedy(engine, prompt, 3);
    const seen: number[] = [];
    for await (const event of client.generate({ sessionId: "cancel", maxNewTokens: MAX_NEW })) {
      if (event.type === "token") seen.push(event.id);
      if (seen.length === 3) break;
    }
    expect(seen).toEqual(expected);
    // Queued behind the generation: it completes only once decoding has stopped.
    const after = await client.append({ sessionId: "cancel", input: { tokens: [7] } });
    const generated = after.tokensSeen - prompt.length - 1;
    expect(generated).toBeGreaterThanOrEqual(3);
    expect(generated).toBeLessThan(MAX_NEW);
    expect((await client.getSession("cancel")).tokensSeen).toBe(after.tokensSeen);
  });

  it("answers DEADLINE_EXCEEDED when a Generate's deadline passes, and stops decoding", async () => {
    const prompt = ids.slice(0, 16);
    await client.append({ sessionId: "deadline", input: { tokens: prompt } });
    const received: GenerateEvent[] = [];
    const err = await failure(
      (async () => {
        for await (const event of client.generate({ sessionId: "deadline", maxNewTokens: MAX_NEW }, { deadline: Date.now() + 300 })) received.push(event);
      })(),
    );
    expect(err.code).toBe(Status.DEADLINE_EXCEEDED);
    expect(received.some((e) => e.type === "finished")).toBe(false);
    const after = await client.append({ sessionId: "deadline", input: { tokens: [7] } });
    expect(after.tokensSeen - prompt.length - 1).toBeLessThan(MAX_NEW);
    expect((await client.getSession("deadline")).tokensSeen).toBe(after.tokensSeen);
  });

  it("answers several Stream requests in order, reports a bad one in-band and goes on", async () => {
    const a = ids.slice(0, 12);
    const text = " and then";
    const ref = await Reference.open(engine);
    await ref.append(a);
    const firstGen = await ref.greedy(6);
    const secondGen = await ref.greedy(6);
    await ref.close();

    const stream = client.openStream();
    stream.append({ sessionId: "bidi", input: { tokens: a }, requestId: "s1" });
    stream.generate({ sessionId: "bidi", maxNewTokens: 6, requestId: "s2" });
    stream.append({ sessionId: "bidi", input: { tokens: [1, VOCAB] }, requestId: "s3" });
    stream.send({});
    stream.generate({ sessionId: "bidi", maxNewTokens: 6, requestId: "s4" });
    stream.append({ sessionId: "bidi", input: { text }, requestId: "s5" });
    stream.end();
    const responses: StreamEvent[] = [];
    for await (const r of stream) responses.push(r);

    const summary = responses.map((r) => `${r.requestId}:${r.type}`);
    expect(summary).toEqual([
      "s1:append",
      ...Array<string>(6).fill("s2:token"),
      "s2:finished",
      "s3:error",
      ":error",
      ...Array<string>(6).fill("s4:token"),
      "s4:finished",
      "s5:append",
    ]);
    const tokenIds = (requestId: string): number[] => responses.flatMap((r) => (r.type === "token" && r.requestId === requestId ? [r.id] : []));
    expect(tokenIds("s2")).toEqual(firstGen);
    expect(tokenIds("s4")).toEqual(secondGen);
    expect(responses[8]).toMatchObject({ type: "error", code: Status.INVALID_ARGUMENT });
    expect((responses[8] as { message: string }).message).toContain(String(VOCAB));
    expect(responses[9]).toMatchObject({ type: "error", code: Status.INVALID_ARGUMENT });
    expect(responses[responses.length - 1]).toMatchObject({ type: "append", tokensSeen: a.length + 12 + engine.tokenizer!.encode(text).length });
  });

  it("cancels one generation inside a Stream with FINISH_REASON_CANCELLED and runs the next request", async () => {
    const prompt = ids.slice(5, 25);
    const stream = client.openStream();
    stream.generate({ sessionId: "bidi-cancel", prompt: { tokens: prompt }, maxNewTokens: MAX_NEW, requestId: "long" });
    stream.append({ sessionId: "bidi-cancel", input: { tokens: [3, 4] }, requestId: "after" });
    const responses: StreamEvent[] = [];
    let tokens = 0;
    for await (const r of stream) {
      responses.push(r);
      if (r.type === "token" && ++tokens === 3) {
        stream.cancelRequest("long");
        stream.end();
      }
    }
    const finished = responses.find((r) => r.type === "finished");
    if (finished?.type !== "finished") throw new Error("no finished message");
    expect(finished).toMatchObject({ requestId: "long", reason: "cancelled", promptTokens: prompt.length });
    expect(finished.generatedTokens).toBeGreaterThanOrEqual(3);
    expect(finished.generatedTokens).toBeLessThan(MAX_NEW);
    expect(responses.filter((r) => r.type === "token")).toHaveLength(finished.generatedTokens);
    expect(responses[responses.length - 1]).toMatchObject({ type: "append", requestId: "after", tokensSeen: prompt.length + finished.generatedTokens + 2 });
  });

  it("describes a session with GetSession and frees it with CloseSession", async () => {
    await client.append({ sessionId: "info", input: { tokens: ids.slice(0, 40) } });
    expect(await client.getSession("info")).toEqual({
      sessionId: "info",
      tokensSeen: 40,
      cacheFill: 32,
      capacity: 32,
      sinks: 4,
      window: 28,
      policy: "sinks",
      owner: address,
      servedBy: address,
    });
    await client.append({ sessionId: "info-window", input: { tokens: ids.slice(0, 10) }, config: { policy: "window", window: 16 } });
    expect(await client.getSession("info-window")).toMatchObject({ policy: "window", window: 16, cacheFill: 10, tokensSeen: 10 });

    expect(await client.closeSession("info", { requestId: "c-1" })).toEqual({ requestId: "c-1", existed: true });
    expect((await failure(client.getSession("info"))).code).toBe(Status.NOT_FOUND);
    expect((await client.closeSession("info")).existed).toBe(false);
    expect((await failure(client.getSession("never-created"))).code).toBe(Status.NOT_FOUND);
  });

  describe("rejects malformed requests with INVALID_ARGUMENT and leaves the session untouched", () => {
    const cases: Array<[string, (c: StreamsinkClient) => Promise<unknown>]> = [
      ["an out-of-vocabulary token id", (c) => c.append({ sessionId: "strict", input: { tokens: [5, VOCAB] } })],
      ["empty text", (c) => c.append({ sessionId: "strict", input: { text: "" } })],
      ["empty token ids", (c) => c.append({ sessionId: "strict", input: { tokens: [] } })],
      ["no input", (c) => c.append({ sessionId: "strict", input: {} })],
      ["both text and token ids", (c) => c.append({ sessionId: "strict", input: { text: "hi", tokens: [5] } })],
      ["an empty session id", (c) => c.append({ sessionId: "", input: { tokens: [5] } })],
      ["a 257-character session id", (c) => c.append({ sessionId: "s".repeat(257), input: { tokens: [5] } })],
      ["a negative temperature", (c) => collect(c.generate({ sessionId: "strict", sampling: { temperature: -1 }, maxNewTokens: 2 }))],
      ["top_p = 0", (c) => collect(c.generate({ sessionId: "strict", sampling: { temperature: 1, topP: 0 }, maxNewTokens: 2 }))],
      ["top_p > 1", (c) => collect(c.generate({ sessionId: "strict", sampling: { temperature: 1, topP: 1.5 }, maxNewTokens: 2 }))],
      ["an out-of-vocabulary prompt", (c) => collect(c.generate({ sessionId: "strict", prompt: { tokens: [VOCAB + 10] }, maxNewTokens: 2 }))],
      ["an empty stop sequence", (c) => collect(c.generate({ sessionId: "strict", stop: [""], maxNewTokens: 2 }))],
    ];
    it.each(cases)("%s", async (_name, call) => {
      await client.append({ sessionId: "strict", input: { tokens: [1, 2, 3] } });
      const before = (await client.getSession("strict")).tokensSeen;
      expect((await failure(call(client))).code).toBe(Status.INVALID_ARGUMENT);
      expect((await client.getSession("strict")).tokensSeen).toBe(before);
    });
  });

  it("answers RESOURCE_EXHAUSTED for max_new_tokens above the limit and for an oversized message", async () => {
    const tooMany = await failure(collect(client.generate({ sessionId: "limits", prompt: { tokens: [1, 2] }, maxNewTokens: MAX_NEW + 1 })));
    expect(tooMany.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(tooMany.details).toContain(String(MAX_NEW));
    const oversized = await failure(client.append({ sessionId: "limits", input: { text: "word ".repeat((RECEIVE_LIMIT / 5) * 2) } }));
    expect(oversized.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(host.has("limits")).toBe(false);
  });

  it("answers UNAVAILABLE with a retry-after-ms trailer when the gateway says the owner is moving", async () => {
    const moving: SessionGateway = {
      selfAddress: "moving:1",
      execute: () => Promise.reject(new OwnerUnavailableError("the session's partition is being reassigned", 750)),
      getSession: () => Promise.reject(new OwnerUnavailableError("the session's partition is being reassigned", 750)),
    };
    const other = new GrpcServer(moving);
    const port = await other.start("127.0.0.1", 0);
    const otherClient = await StreamsinkClient.connect(`127.0.0.1:${port}`);
    try {
      const err = await failure(otherClient.append({ sessionId: "x", input: { tokens: [1] } }));
      expect(err.code).toBe(Status.UNAVAILABLE);
      expect(retryAfterMs(err as { metadata: Metadata })).toBe(750);
      expect((await failure(otherClient.getSession("x"))).code).toBe(Status.UNAVAILABLE);
    } finally {
      otherClient.close();
      await other.stop(1000);
    }
  });

  it("reports SERVING / NOT_SERVING through grpc.health.v1", async () => {
    expect(await client.health()).toBe("SERVING");
    expect(await client.health("")).toBe("SERVING");
    server.setServing(false);
    expect(await client.health()).toBe("NOT_SERVING");
    expect(await client.health("")).toBe("NOT_SERVING");
    server.setServing(true);
    expect(await client.health()).toBe("SERVING");
  });

  it("lists the service through server reflection", async () => {
    const require = createRequire(import.meta.url);
    const reflectionProto = join(dirname(require.resolve("@grpc/reflection")), "..", "proto", "grpc", "reflection", "v1", "reflection.proto");
    const definition = protoLoader.loadSync(reflectionProto, { keepCase: true, defaults: true, oneofs: true });
    const method = (definition["grpc.reflection.v1.ServerReflection"] as protoLoader.ServiceDefinition)["ServerReflectionInfo"]!;
    const raw = new Client(address, credentials.createInsecure());
    try {
      const call = raw.makeBidiStreamRequest(method.path, method.requestSerialize, method.responseDeserialize);
      call.write({ list_services: "*" });
      call.write({ file_containing_symbol: `${SERVICE_NAME}.Generate` });
      call.end();
      const responses: Array<{ list_services_response?: { service: Array<{ name: string }> }; file_descriptor_response?: { file_descriptor_proto: Buffer[] } }> = [];
      for await (const r of call) responses.push(r as (typeof responses)[number]);
      const names = responses[0]!.list_services_response!.service.map((s) => s.name);
      expect(names).toContain(SERVICE_NAME);
      expect(names).toContain("grpc.health.v1.Health");
      const files = responses[1]!.file_descriptor_response!.file_descriptor_proto;
      expect(files.length).toBeGreaterThan(0);
      expect(Buffer.concat(files).toString("latin1")).toContain("GenerateRequest");
    } finally {
      raw.close();
    }
  });

  it("serves 20 concurrent sessions through one server, each equal to its own engine run", async () => {
    const prompts = Array.from({ length: 20 }, (_, i) => ids.slice(i * 3, i * 3 + 8 + (i % 5)));
    const expected: number[][] = [];
    for (const p of prompts) expected.push(await referenceGreedy(engine, p, 16));

    const results = await Promise.all(
      prompts.map(async (prompt, i) => {
        const session = `concurrent-${i}`;
        const appended = await client.append({ sessionId: session, input: { tokens: prompt } });
        const events = await collect(client.generate({ sessionId: session, maxNewTokens: 16 }));
        return { appended, events };
      }),
    );
    results.forEach(({ appended, events }, i) => {
      expect(appended.tokensSeen).toBe(prompts[i]!.length);
      expect(tokensOf(events)).toEqual(expected[i]);
      expect(finishedOf(events).reason).toBe("length");
    });
    const infos = await Promise.all(prompts.map((_, i) => client.getSession(`concurrent-${i}`)));
    expect(infos.map((info) => info.tokensSeen)).toEqual(prompts.map((p) => p.length + 16));
  });

  it("stop() lets calls finish for the grace period, then cancels a running generation", async () => {
    const second = new GrpcServer(gateway);
    const port = await second.start("127.0.0.1", 0);
    const secondClient = await StreamsinkClient.connect(`127.0.0.1:${port}`);
    const prompt = ids.slice(0, 10);
    await client.append({ sessionId: "shutdown", input: { tokens: prompt } });
    let stopping: Promise<void> | undefined;
    const err = await failure(
      (async () => {
        let tokens = 0;
        for await (const event of secondClient.generate({ sessionId: "shutdown", maxNewTokens: MAX_NEW })) {
          if (event.type === "token" && ++tokens === 3) stopping = second.stop(50);
        }
      })(),
    );
    await stopping;
    secondClient.close();
    expect([Status.CANCELLED, Status.UNAVAILABLE]).toContain(err.code);
    const after = await client.append({ sessionId: "shutdown", input: { tokens: [7] } });
    expect(after.tokensSeen - prompt.length - 1).toBeLessThan(MAX_NEW);
    expect((await client.getSession("shutdown")).tokensSeen).toBe(after.tokensSeen);
  });
});
