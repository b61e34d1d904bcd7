/**
 * Client commands against a running streamsink server:
 *   streamsink generate   stream a generation to stdout
 *   streamsink chat       line-by-line conversation on stdin/stdout
 *   streamsink feed       stream a text file into a session
 * Each takes its argv (after the command name) and, for tests, the streams
 * to use instead of the process's.
 */
import { randomUUID } from "node:crypto";
import { createReadStream, readFileSync } from "node:fs";
import { stat } from "node:fs/promises";
import { createInterface } from "node:readline";
import { StringDecoder } from "node:string_decoder";
import { parseArgs } from "node:util";

import { type Metadata, status as Status } from "@grpc/grpc-js";
import { Kafka, logLevel, type Producer } from "kafkajs";

import { type ConnectOptions, StreamsinkClient, type GenerateParams } from "../grpc/grpc-client.js";
import { retryAfterMs } from "../grpc/grpc-status.js";
import type { KafkaClientOptions } from "../security/kafka-client-security.js";
import { clientCredentials } from "../security/tls.js";
import { encodeInputRecord } from "../worker/kafka/record-codec.js";
import type { SamplingParams, SessionOp } from "../worker/operations.js";
import { KAFKA_SECURITY_FLAGS, KAFKA_SECURITY_USAGE, kafkaSecurityFromFlags } from "./kafka-client-flags.js";
import { ProgressBar } from "./progress.js";
import { parseIntFlag, UsageError } from "./usage-error.js";

export const GENERATE_USAGE = `usage: streamsink generate --server HOST:PORT --session ID [--prompt TEXT]
         [--max-new-tokens N] [--temperature T] [--top-p P] [--top-k K]
         [--seed S] [--stop STR]...

  Streams the generated text to stdout as it is decoded (greedy unless
  --temperature > 0); the finish reason and token counts go to stderr.

  Every client command (generate, chat, feed) takes --tls-ca FILE (TLS),
  --tls-cert FILE --tls-key FILE (mutual TLS) and --token-file FILE; the
  bearer token may also come from STREAMSINK_TOKEN.`;

export const CHAT_USAGE = `usage: streamsink chat --server HOST:PORT --session ID [--max-new-tokens N]
         [--temperature T] [--top-p P] [--top-k K] [--seed S] [--stop STR]...

  Appends each line read from stdin (with its newline) to the session and
  streams a generated reply to stdout. A reply ends at a newline unless
  --stop gives other stop sequences.`;

export const FEED_USAGE = `usage: streamsink feed (--server HOST:PORT | --kafka-brokers H:P[,H:P] [--kafka-topic T]) --session ID --text FILE [--chunk-bytes N]
         ${KAFKA_SECURITY_USAGE}

  Streams a UTF-8 text file into the session, with gRPC Append calls or as
  append records on the Kafka input topic (default streamsink.input), in
  chunks of at most N bytes (default 16384) cut where whitespace starts, so
  the chunks tokenize as the whole text would. Progress on stderr when it is
  a terminal.`;

export interface CommandIo {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WriteStream;
}

const PROCESS_IO: CommandIo = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr };

const CONNECTION_OPTIONS = {
  server: { type: "string" },
  session: { type: "string" },
  "tls-ca": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "token-file": { type: "string" },
} as const;

const SAMPLING_OPTIONS = {
  "max-new-tokens": { type: "string" },
  temperature: { type: "string" },
  "top-p": { type: "string" },
  "top-k": { type: "string" },
  seed: { type: "string" },
  stop: { type: "string", multiple: true },
} as const;

interface Connection {
  server: string;
  session: string;
  /** TLS and bearer token for the channel. */
  connect: ConnectOptions;
}

interface ConnectionFlags {
  server?: string;
  session?: string;
  "tls-ca"?: string;
  "tls-cert"?: string;
  "tls-key"?: string;
  "token-file"?: string;
}

/** TLS from --tls-* files, the bearer token from --token-file or STREAMSINK_TOKEN (never a flag: it would show in `ps`). */
function connectOptions(values: ConnectionFlags): ConnectOptions {
  if ((values["tls-cert"] === undefined) !== (values["tls-key"] === undefined)) throw new UsageError("--tls-cert and --tls-key go together");
  if (values["tls-cert"] !== undefined && values["tls-ca"] === undefined) throw new UsageError("--tls-cert needs --tls-ca");
  const token = values["token-file"] !== undefined ? readFileSync(values["token-file"], "utf8").trim() : process.env.STREAMSINK_TOKEN || undefined;
  return {
    ...(token ? { bearerToken: token } : {}),
    ...(values["tls-ca"] !== undefined
      ? { credentials: clientCredentials({ caFile: values["tls-ca"], ...(values["tls-cert"] !== undefined ? { certFile: values["tls-cert"], keyFile: values["tls-key"]! } : {}) }) }
      : {}),
  };
}

function parseConnection(values: ConnectionFlags): Connection {
  if (!values.server) throw new UsageError("--server HOST:PORT is required");
  if (!/^(\[[0-9a-fA-F:.]+\]|[^\s:]+):\d{1,5}$/.test(values.server)) throw new UsageError(`--server must be HOST:PORT, got "${values.server}"`);
  if (!values.session) throw new UsageError("--session is required");
  if (values.session.length > 256) throw new UsageError("--session must be at most 256 characters");
  return { server: values.server, session: values.session, connect: connectOptions(values) };
}

function parseNumberFlag(name: string, value: string | undefined, valid: (n: number) => boolean, rule: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || !valid(n)) throw new UsageError(`--${name} must be ${rule}, got "${value}"`);
  return n;
}

interface GenerationFlags {
  maxNewTokens?: number;
  sampling: SamplingParams;
  stop: string[];
}

function parseGenerationFlags(values: {
  "max-new-tokens"?: string;
  temperature?: string;
  "top-p"?: string;
  "top-k"?: string;
  seed?: string;
  stop?: string[];
}): GenerationFlags {
  const maxNewTokens = parseIntFlag("max-new-tokens", values["max-new-tokens"], 0);
  const temperature = parseNumberFlag("temperature", values.temperature, (n) => n >= 0, "a number >= 0");
  const topP = parseNumberFlag("top-p", values["top-p"], (n) => n > 0 && n <= 1, "a number in (0, 1]");
  const topK = parseIntFlag("top-k", values["top-k"], 0);
  const seed = parseIntFlag("seed", values.seed, 0);
  if (seed !== undefined && seed > 0xffffffff) throw new UsageError(`--seed must be below 2^32, got ${seed}`);
  const stop = values.stop ?? [];
  if (stop.some((s) => s.length === 0)) throw new UsageError("--stop must not be empty");
  return {
    ...(maxNewTokens !== undefined ? { maxNewTokens } : {}),
    sampling: {
      temperature: temperature ?? 0,
      topK: topK ?? 0,
      seed: seed ?? 0,
      ...(topP !== undefined ? { topP } : {}),
    },
    stop,
  };
}

/**
 * Writes a generation's text as it streams. The server streams the tokens of
 * a stop sequence before it sees the sequence complete (the final text
 * leaves it out), so nothing from a stop sequence's first character on is
 * written, and the last few characters wait while they could still turn out
 * to begin one.
 */
class GenerationPrinter {
  readonly #out: NodeJS.WritableStream;
  readonly #stop: readonly string[];
  readonly #holdBack: number;
  #text = "";
  #printed = 0;

  constructor(out: NodeJS.WritableStream, stop: readonly string[]) {
    this.#out = out;
    this.#stop = stop;
    this.#holdBack = Math.max(0, ...stop.map((s) => s.length - 1));
  }

  piece(text: string): void {
    this.#text += text;
    let safe = this.#text.length - this.#holdBack;
    for (const s of this.#stop) {
      const at = this.#text.indexOf(s, Math.max(0, this.#printed - s.length + 1));
      if (at >= 0) safe = Math.min(safe, at);
    }
    if (safe > this.#printed) {
      this.#out.write(this.#text.slice(this.#printed, safe));
      this.#printed = safe;
    }
  }

  /** Writes what the final text has beyond what was printed. */
  finish(finalText: string): void {
    if (finalText.length > this.#printed) this.#out.write(finalText.slice(this.#printed));
  }
}

async function streamGeneration(
  client: StreamsinkClient,
  params: GenerateParams,
  out: NodeJS.WritableStream,
): Promise<{ reason: string; generated: number; prompt: number }> {
  const printer = new GenerationPrinter(out, params.stop ?? []);
  for await (const event of client.generate(params)) {
    if (event.type === "token") printer.piece(event.text);
    else {
      printer.finish(event.text);
      return { reason: event.reason, generated: event.generatedTokens, prompt: event.promptTokens };
    }
  }
  throw new Error("the server ended the generation without a final message");
}

export async function runGenerate(argv: string[], io: CommandIo = PROCESS_IO): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: { ...CONNECTION_OPTIONS, ...SAMPLING_OPTIONS, prompt: { type: "string" } },
  });
  const connection = parseConnection(values);
  const flags = parseGenerationFlags(values);
  const client = await StreamsinkClient.connect(connection.server, connection.connect);
  try {
    const result = await streamGeneration(
      client,
      { sessionId: connection.session, ...flags, ...(values.prompt !== undefined ? { prompt: { text: values.prompt } } : {}) },
      io.stdout,
    );
    if (io.stdout.isTTY) io.stdout.write("\n");
    io.stderr.write(`[${result.reason}: ${result.generated} tokens generated after a ${result.prompt}-token prompt]\n`);
  } finally {
    client.close();
  }
}

export async function runChat(argv: string[], io: CommandIo = PROCESS_IO): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: { ...CONNECTION_OPTIONS, ...SAMPLING_OPTIONS },
  });
  const connection = parseConnection(values);
  const flags = parseGenerationFlags(values);
  const stop = flags.stop.length > 0 ? flags.stop : ["\n"];
  const client = await StreamsinkClient.connect(connection.server, connection.connect);
  const lines = createInterface({ input: io.stdin, terminal: false });
  const prompt = (): void => {
    if (io.stdin.isTTY) io.stderr.write("> ");
  };
  try {
    prompt();
    for await (const line of lines) {
      await streamGeneration(client, { sessionId: connection.session, ...flags, stop, prompt: { text: `${line}\n` } }, io.stdout);
      io.stdout.write("\n");
      prompt();
    }
  } finally {
    lines.close();
    client.close();
  }
}

/** Where `feed` sends the text: gRPC Append calls, or (with --kafka-brokers) the input topic. */
interface FeedSink {
  /** Appends one chunk; resolves when it is durable in the session's order. */
  append(text: string, requestId: string): Promise<void>;
  /** Tokens the session holds after the feed, when the sink can tell. */
  tokensSeen(): number | undefined;
  close(): Promise<void>;
}

const FEED_ATTEMPTS = 5;

/** Produces append records to the input topic (key = session id), as any Kafka producer would. */
class KafkaFeedSink implements FeedSink {
  readonly #producer: Producer;
  readonly #topic: string;
  readonly #session: string;

  private constructor(producer: Producer, topic: string, session: string) {
    this.#producer = producer;
    this.#topic = topic;
    this.#session = session;
  }

  static async connect(brokers: string[], security: KafkaClientOptions, topic: string, session: string): Promise<KafkaFeedSink> {
    const kafka = new Kafka({ clientId: "streamsink-feed", brokers, ...security, logLevel: logLevel.ERROR });
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
    await producer.connect();
    return new KafkaFeedSink(producer, topic, session);
  }

  async append(text: string, requestId: string): Promise<void> {
    const op: SessionOp = { kind: "append", session: this.#session, requestId, input: { text } };
    await this.#producer.send({ topic: this.#topic, acks: -1, messages: [{ key: this.#session, value: encodeInputRecord(op) }] });
  }

  tokensSeen(): number | undefined {
    return undefined;
  }

  async close(): Promise<void> {
    await this.#producer.disconnect();
  }
}

class GrpcFeedSink implements FeedSink {
  readonly #client: StreamsinkClient;
  readonly #session: string;
  #tokensSeen: number | undefined;

  constructor(client: StreamsinkClient, session: string) {
    this.#client = client;
    this.#session = session;
  }

  /** Retries UNAVAILABLE (owner moving) with the server's hint; the same request id makes a retry recognisable. */
  async append(text: string, requestId: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        const response = await this.#client.append({ sessionId: this.#session, input: { text }, requestId });
        this.#tokensSeen = response.tokensSeen;
        return;
      } catch (err) {
        const e = err as { code?: number; metadata?: Metadata };
        if (e.code !== Status.UNAVAILABLE || attempt >= FEED_ATTEMPTS) throw err;
        const waitMs = retryAfterMs(e) || 250 * attempt;
        await new Promise((resolve) => setTimeout(resolve, waitMs));
      }
    }
  }

  tokensSeen(): number | undefined {
    return this.#tokensSeen;
  }

  async close(): Promise<void> {
    this.#client.close();
  }
}

/**
 * Cuts text into chunks of at most `maxBytes` UTF-8 bytes. A cut goes where
 * a run of whitespace starts (tokenizers attach whitespace to the following
 * word, so the chunks tokenize as the whole text does); a chunk with no such
 * place is cut at the byte limit, between characters.
 */
export async function* textChunks(path: string, maxBytes: number): AsyncGenerator<{ text: string; bytes: number }> {
  const decoder = new StringDecoder("utf8");
  let pending = "";
  for await (const buffer of createReadStream(path, { highWaterMark: Math.max(maxBytes, 1 << 16) })) {
    pending += decoder.write(buffer as Buffer);
    let cut: number;
    while ((cut = chunkEnd(pending, maxBytes, false)) > 0) {
      const text = pending.slice(0, cut);
      pending = pending.slice(cut);
      yield { text, bytes: Buffer.byteLength(text) };
    }
  }
  pending += decoder.end();
  while (pending.length > 0) {
    const cut = chunkEnd(pending, maxBytes, true);
    const text = pending.slice(0, cut);
    pending = pending.slice(cut);
    yield { text, bytes: Buffer.byteLength(text) };
  }
}

/** Length (in UTF-16 units) of the next chunk of `text`; 0 when more input is needed first. */
function chunkEnd(text: string, maxBytes: number, atEnd: boolean): number {
  let bytes = 0;
  let lastRunStart = 0;
  let i = 0;
  while (i < text.length) {
    const code = text.codePointAt(i)!;
    const size = code < 0x80 ? 1 : code < 0x800 ? 2 : code < 0x10000 ? 3 : 4;
    if (bytes + size > maxBytes) return lastRunStart > 0 ? lastRunStart : i;
    const isSpace = /\s/.test(String.fromCodePoint(code));
    if (isSpace && i > 0 && !/\s/.test(text[i - 1]!)) lastRunStart = i;
    bytes += size;
    i += code > 0xffff ? 2 : 1;
  }
  return atEnd ? text.length : 0;
}

export async function runFeed(argv: string[], io: CommandIo = PROCESS_IO): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      ...CONNECTION_OPTIONS,
      text: { type: "string" },
      "chunk-bytes": { type: "string" },
      "kafka-brokers": { type: "string" },
      "kafka-topic": { type: "string" },
      ...KAFKA_SECURITY_FLAGS,
    },
  });
  // With --kafka-brokers the records go to the input topic and no server is contacted.
  const connection = values["kafka-brokers"] ? parseConnection({ ...values, server: values.server ?? "kafka:0" }) : parseConnection(values);
  if (!values.text) throw new UsageError("--text FILE is required");
  const chunkBytes = parseIntFlag("chunk-bytes", values["chunk-bytes"], 16) ?? 16384;
  let totalBytes: number;
  try {
    totalBytes = (await stat(values.text)).size;
  } catch (err) {
    throw new UsageError(`--text: cannot read ${values.text}: ${(err as Error).message}`);
  }

  const brokers = values["kafka-brokers"]?.split(",").map((b) => b.trim()).filter(Boolean) ?? [];
  const sink: FeedSink =
    brokers.length > 0
      ? await KafkaFeedSink.connect(brokers, kafkaSecurityFromFlags(values), values["kafka-topic"] ?? "streamsink.input", connection.session)
      : new GrpcFeedSink(await StreamsinkClient.connect(connection.server, connection.connect), connection.session);
  const progress = new ProgressBar("feed", totalBytes, io.stderr);
  const runId = randomUUID();
  let sentBytes = 0;
  let chunks = 0;
  try {
    for await (const chunk of textChunks(values.text, chunkBytes)) {
      await sink.append(chunk.text, `feed-${runId}-${chunks}`);
      chunks++;
      sentBytes += chunk.bytes;
      progress.update(sentBytes);
    }
  } finally {
    progress.finish();
    await sink.close();
  }
  const seen = sink.tokensSeen();
  io.stderr.write(`fed ${sentBytes} bytes in ${chunks} appends to session "${connection.session}"${seen !== undefined ? `; it has seen ${seen} tokens` : ""}\n`);
}
