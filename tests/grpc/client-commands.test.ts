/**
 * `streamsink generate`, `chat` and `feed` (services/cli/client-commands.ts)
 * against a real GrpcServer + SessionHost on 127.0.0.1:0, with in-memory
 * stdin/stdout/stderr. Outputs are compared with direct engine sessions fed
 * the same text.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { type CommandIo, runChat, runFeed, runGenerate, textChunks } from "../../services/cli/client-commands.js";
import { UsageError } from "../../services/cli/usage-error.js";
import { argmax, Engine } from "../../services/engine/index.js";
import { StreamsinkClient } from "../../services/grpc/grpc-client.js";
import { GrpcServer } from "../../services/grpc/grpc-server.js";
import { LocalSessionGateway } from "../../services/grpc/session-gateway.js";
import { SessionHost } from "../../services/worker/session-host.js";
import { modelDir } from "../helpers/fixtures.js";

const CONFIG = { policy: "sinks", sinks: 4, window: 28 } as const;
const TEXT = "Streams never end.  A meeting runs all afternoon,\n\na log keeps growing — café, naïve, 日本語, 🙂 — while\tthe night passes. ";

interface Captured {
  io: CommandIo;
  stdout(): string;
  stderr(): string;
}

function capture(stdinText = ""): Captured {
  const out: string[] = [];
  const err: string[] = [];
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stdout.on("data", (d: Buffer) => out.push(d.toString("utf8")));
  stderr.on("data", (d: Buffer) => err.push(d.toString("utf8")));
  return {
    io: { stdin: Readable.from([stdinText]), stdout, stderr: stderr as unknown as NodeJS.WriteStream },
    stdout: () => out.join(""),
    stderr: () => err.join(""),
  };
}

describe("CLI client commands (llama-gqa, real server)", () => {
  let engine: Engine;
  let host: SessionHost;
  let server: GrpcServer;
  let client: StreamsinkClient;
  let address: string;
  let dir: string;

  /** Greedy tokens after `text`, stopping once the decoded output contains `stop` (or after `max`). */
  async function reference(texts: string[], max: number, stop?: string): Promise<string[]> {
    const tokenizer = engine.tokenizer!;
    const session = await engine.openSession({ ...CONFIG, sinkToken: "model" });
    const replies: string[] = [];
    for (const text of texts) {
      await session.append(tokenizer.encode(text));
      const generated: number[] = [];
      let reply = "";
      while (generated.length < max) {
        const token = argmax(session.nextLogprobs!);
        generated.push(token);
        await session.append([token]);
        reply = tokenizer.decode(generated);
        if (stop !== undefined && reply.includes(stop)) {
          reply = reply.slice(0, reply.indexOf(stop));
          break;
        }
      }
      replies.push(reply);
    }
    await session.close();
    return replies;
  }

  beforeAll(async () => {
    engine = await Engine.load(modelDir("llama-gqa"), { backend: "cpu" });
    host = new SessionHost(engine, { ...CONFIG });
    const gateway = new LocalSessionGateway(host);
    server = new GrpcServer(gateway);
    const port = await server.start("127.0.0.1", 0);
    address = `127.0.0.1:${port}`;
    gateway.selfAddress = address;
    server.setServing(true);
    client = await StreamsinkClient.connect(address);
    dir = await mkdtemp(join(tmpdir(), "streamsink-cli-"));
  });

  afterAll(async () => {
    client?.close();
    await server?.stop(1000);
    await host?.close();
    await engine?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("generate streams the greedy text to stdout and the finish reason to stderr", async () => {
    const [expected] = await reference([" the quick brown fox"], 12);
    const c = capture();
    await runGenerate(["--server", address, "--session", "cli-generate", "--prompt", " the quick brown fox", "--max-new-tokens", "12"], c.io);
    expect(c.stdout()).toBe(expected);
    const promptTokens = engine.tokenizer!.encode(" the quick brown fox").length;
    expect(c.stderr()).toContain(`[length: 12 tokens generated after a ${promptTokens}-token prompt]`);
  });

  it("generate with --stop prints the text up to the stop sequence, never the stop sequence", async () => {
    const [full] = await reference([" over the lazy dog"], 40);
    // A stop sequence made of two characters the greedy text reaches after a few tokens.
    const at = [...full!.matchAll(/[a-z]{2}/g)].map((m) => m.index).find((i) => i >= 6 && !full!.slice(0, i).includes(full!.slice(i, i + 2)));
    expect(at).toBeDefined();
    const stop = full!.slice(at!, at! + 2);
    const [expected] = await reference([" over the lazy dog"], 40, stop);
    const c = capture();
    await runGenerate(["--server", address, "--session", "cli-stop", "--prompt", " over the lazy dog", "--max-new-tokens", "40", "--stop", stop], c.io);
    expect(c.stdout()).toBe(expected);
    expect(c.stdout()).not.toContain(stop);
    expect(c.stderr()).toContain("[stop:");
  });

  it("chat appends each stdin line and streams a reply that ends at a newline", async () => {
    const lines = ["hello there", "and again"];
    const expected = await reference(
      lines.map((l) => `${l}\n`),
      20,
      "\n",
    );
    const c = capture(lines.join("\n") + "\n");
    await runChat(["--server", address, "--session", "cli-chat", "--max-new-tokens", "20"], c.io);
    expect(c.stdout()).toBe(expected.map((r) => `${r}\n`).join(""));
  });

  it("feed streams a file in whitespace-cut chunks that leave the session as one append of the whole text would", async () => {
    const text = TEXT.repeat(6);
    const file = join(dir, "feed.txt");
    await writeFile(file, text);
    const c = capture();
    await runFeed(["--server", address, "--session", "cli-feed", "--text", file, "--chunk-bytes", "48"], c.io);
    const wholeIds = engine.tokenizer!.encode(text);
    expect((await client.getSession("cli-feed")).tokensSeen).toBe(wholeIds.length);
    const appends = Number(/in (\d+) appends/.exec(c.stderr())?.[1]);
    expect(appends).toBeGreaterThanOrEqual(Math.ceil(Buffer.byteLength(text) / 48));

    // Same history, same state: the next greedy tokens match a session fed the whole text at once.
    const session = await engine.openSession({ ...CONFIG, sinkToken: "model" });
    await session.append(wholeIds);
    const expected: number[] = [];
    for (let i = 0; i < 8; i++) {
      const token = argmax(session.nextLogprobs!);
      expected.push(token);
      await session.append([token]);
    }
    await session.close();
    const got: number[] = [];
    for await (const e of client.generate({ sessionId: "cli-feed", maxNewTokens: 8 })) if (e.type === "token") got.push(e.id);
    expect(got).toEqual(expected);
  });

  it("textChunks cuts within the byte limit, between characters, where whitespace starts", async () => {
    const file = join(dir, "chunks.txt");
    const text = TEXT.repeat(3) + "x".repeat(100) + "🙂".repeat(20);
    await writeFile(file, text);
    const chunks: string[] = [];
    for await (const chunk of textChunks(file, 32)) {
      expect(chunk.bytes).toBe(Buffer.byteLength(chunk.text));
      expect(chunk.bytes).toBeLessThanOrEqual(32);
      expect(chunk.text).not.toContain("\uFFFD");
      chunks.push(chunk.text);
    }
    expect(chunks.join("")).toBe(text);
    const wordChunks = chunks.filter((c) => !/^[x🙂]+$/u.test(c));
    for (const c of wordChunks.slice(1)) expect(c).toMatch(/^\s/);
    const tokenizer = engine.tokenizer!;
    expect(wordChunks.flatMap((c) => tokenizer.encode(c))).toEqual(tokenizer.encode(wordChunks.join("")));
  });

  it.each([
    ["generate without --server", () => runGenerate(["--session", "s"])],
    ["generate with a malformed --server", () => runGenerate(["--server", "localhost", "--session", "s"])],
    ["generate without --session", () => runGenerate(["--server", "127.0.0.1:1"])],
    ["generate with --temperature -1", () => runGenerate(["--server", "127.0.0.1:1", "--session", "s", "--temperature=-1"])],
    ["generate with --top-p 0", () => runGenerate(["--server", "127.0.0.1:1", "--session", "s", "--top-p", "0"])],
    ["generate with --max-new-tokens 1.5", () => runGenerate(["--server", "127.0.0.1:1", "--session", "s", "--max-new-tokens", "1.5"])],
    ["chat with an empty --stop", () => runChat(["--server", "127.0.0.1:1", "--session", "s", "--stop", ""])],
    ["feed without --text", () => runFeed(["--server", "127.0.0.1:1", "--session", "s"])],
    ["feed with --chunk-bytes 0", () => runFeed(["--server", "127.0.0.1:1", "--session", "s", "--text", "x", "--chunk-bytes", "0"])],
    ["feed of a missing file", () => runFeed(["--server", "127.0.0.1:1", "--session", "s", "--text", "/nonexistent/streamsink.txt"])],
  ])("%s is a UsageError", async (_name, run) => {
    await expect(run()).rejects.toBeInstanceOf(UsageError);
  });

  it("an unknown flag is a parse error (exit status 2 in main)", async () => {
    await expect(runGenerate(["--server", "127.0.0.1:1", "--session", "s", "--bogus"])).rejects.toMatchObject({ code: "ERR_PARSE_ARGS_UNKNOWN_OPTION" });
  });
});
