/**
 * gRPC request decoding under hostile input. Two levels:
 * - In process, any bytes as an Append/Generate/Close/GetSession/Stream
 *   request: protobuf decoding either fails (grpc-js answers INTERNAL
 *   "error deserializing") or yields a message that op-codec turns into a
 *   valid op or an InvalidRequestError. Nothing else escapes.
 * - Over a real socket, random bytes sent to every method of a running
 *   server: each call ends with a status, the server keeps serving valid
 *   calls, and the session it holds is untouched.
 */
import { Client, credentials, Metadata } from "@grpc/grpc-js";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { Engine } from "../../../services/engine/index.js";
import { StreamsinkClient } from "../../../services/grpc/grpc-client.js";
import { GrpcServer } from "../../../services/grpc/grpc-server.js";
import type { GenerateRequestMessage } from "../../../services/grpc/messages.js";
import { decodeAppend, decodeClose, decodeGenerate, decodeSessionId } from "../../../services/grpc/op-codec.js";
import { SERVICE_NAME, streamsinkProto } from "../../../services/grpc/proto.js";
import { LocalSessionGateway } from "../../../services/grpc/session-gateway.js";
import { InvalidRequestError } from "../../../services/worker/errors.js";
import { SessionHost } from "../../../services/worker/session-host.js";
import { modelDir } from "../../helpers/fixtures.js";
import { CaseCounter, RUNS, timeoutFor } from "./fuzz-settings.js";

const counter = new CaseCounter();
afterAll(() => counter.report("grpc-requests"));

/** Bytes that are often valid protobuf: random fields with varint, length-delimited and fixed wire types. */
const protobufish = fc
  .array(
    fc.tuple(fc.integer({ min: 1, max: 12 }), fc.constantFrom(0, 1, 2, 5), fc.uint8Array({ maxLength: 24 }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })),
    { maxLength: 8 },
  )
  .map((fields) => {
    const out: number[] = [];
    const varint = (v: bigint) => {
      do {
        let b = Number(v & 0x7fn);
        v >>= 7n;
        if (v > 0n) b |= 0x80;
        out.push(b);
      } while (v > 0n);
    };
    for (const [field, wire, bytes, n] of fields) {
      varint(BigInt((field << 3) | wire));
      if (wire === 0) varint(n);
      else if (wire === 2) {
        varint(BigInt(bytes.length));
        out.push(...bytes);
      } else out.push(...bytes.slice(0, wire === 1 ? 8 : 4), ...new Array(Math.max(0, (wire === 1 ? 8 : 4) - bytes.length)).fill(0));
    }
    return Buffer.from(out);
  });
const anyBytes = fc.oneof(protobufish, fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)));

describe("fuzz: gRPC request decoding (in process)", () => {
  const methods = streamsinkProto().methods;

  function decodes(run: () => unknown): void {
    try {
      run();
    } catch (err) {
      if (!(err instanceof InvalidRequestError)) throw err;
    }
  }

  it(`Append, Generate, Close, GetSession, Stream messages from any bytes: ${RUNS} cases`, { timeout: timeoutFor(RUNS) }, () => {
    fc.assert(
      fc.property(anyBytes, fc.constantFrom("append", "generate", "close", "get", "stream"), (bytes, method) => {
        counter.hit("protobuf bytes");
        let message: unknown;
        try {
          if (method === "append") message = methods.append.requestDeserialize(bytes);
          else if (method === "generate") message = methods.generate.requestDeserialize(bytes);
          else if (method === "close") message = methods.closeSession.requestDeserialize(bytes);
          else if (method === "get") message = methods.getSession.requestDeserialize(bytes);
          else message = methods.stream.requestDeserialize(bytes);
        } catch {
          return; // grpc-js answers INTERNAL for a message it cannot deserialise
        }
        const m = message as Record<string, never>;
        if (method === "append") decodes(() => decodeAppend(m));
        else if (method === "generate") decodes(() => decodeGenerate(m as GenerateRequestMessage, 16));
        else if (method === "close") decodes(() => decodeClose(m));
        else if (method === "get") decodes(() => decodeSessionId((m as { sessionId?: string }).sessionId));
        else {
          const s = m as { append?: never; generate?: GenerateRequestMessage };
          if (s.append) decodes(() => decodeAppend(s.append!));
          if (s.generate) decodes(() => decodeGenerate(s.generate!, 16));
        }
      }),
      { numRuns: RUNS },
    );
  });
});

describe("fuzz: gRPC requests over a socket", () => {
  // Over a socket each case is a real call: a twentieth of the in-process count in CI, the full count in the soak.
  const SOCKET_RUNS = RUNS >= 100_000 ? RUNS : Math.max(50, Math.floor(RUNS / 20));
  let engine: Engine;
  let host: SessionHost;
  let server: GrpcServer;
  let raw: Client;
  let client: StreamsinkClient;

  beforeAll(async () => {
    engine = await Engine.load(modelDir("llama-gqa"), { backend: "cpu", threads: 1 });
    host = new SessionHost(engine, { policy: "sinks", sinks: 4, window: 28 }, { maxNewTokens: 8, maxInputTokens: 256 });
    server = new GrpcServer(new LocalSessionGateway(host), { maxReceiveMessageBytes: 4096, defaultMaxNewTokens: 4 });
    const port = await server.start("127.0.0.1", 0);
    server.setServing(true);
    raw = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
    client = await StreamsinkClient.connect(`127.0.0.1:${port}`);
    await client.append({ sessionId: "witness", input: { tokens: [1, 2, 3, 4, 5] } });
  });

  afterAll(async () => {
    raw?.close();
    client?.close();
    await server?.stop(1000);
    await host?.close();
    await engine?.close();
  });

  const identity = (b: Buffer) => b;

  function unary(path: string, bytes: Buffer): Promise<number> {
    return new Promise((resolve) => {
      raw.makeUnaryRequest(path, identity, identity, bytes, new Metadata(), { deadline: Date.now() + 30_000 }, (err) => resolve(err ? (err.code ?? -1) : 0));
    });
  }

  function streaming(path: string, bytes: Buffer): Promise<number> {
    return new Promise((resolve) => {
      const call = raw.makeServerStreamRequest(path, identity, identity, bytes, new Metadata(), { deadline: Date.now() + 30_000 });
      call.on("data", () => undefined);
      call.on("error", (err: { code?: number }) => resolve(err.code ?? -1));
      call.on("end", () => resolve(0));
    });
  }

  function bidi(path: string, messages: Buffer[]): Promise<number> {
    return new Promise((resolve) => {
      const call = raw.makeBidiStreamRequest(path, identity, identity, new Metadata(), { deadline: Date.now() + 30_000 });
      call.on("data", () => undefined);
      call.on("error", (err: { code?: number }) => resolve(err.code ?? -1));
      call.on("end", () => resolve(0));
      for (const m of messages) call.write(m);
      call.end();
    });
  }

  it(`random bytes to every method end in a status and leave the server serving: ${SOCKET_RUNS} cases`, { timeout: timeoutFor(SOCKET_RUNS, 200) }, async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom("Append", "Generate", "GetSession", "CloseSession", "Stream"), fc.array(anyBytes, { minLength: 1, maxLength: 3 }), async (method, messages) => {
        counter.hit("socket");
        const path = `/${SERVICE_NAME}/${method}`;
        // Never close or grow the witness session: a random message may name any session but that one.
        fc.pre(messages.every((m) => !m.includes(Buffer.from("witness"))));
        const code =
          method === "Generate" ? await streaming(path, messages[0]!) : method === "Stream" ? await bidi(path, messages) : await unary(path, messages[0]!);
        expect(Number.isInteger(code) && code >= 0 && code <= 16).toBe(true);
      }),
      { numRuns: SOCKET_RUNS },
    );
    expect((await client.getSession("witness")).tokensSeen).toBe(5);
    expect(await client.health()).toBe("SERVING");
  });
});
