/**
 * `npx tsx bench/redis-sizing.ts`: how many bytes of Redis memory one stored answer takes, with 1 KB
 * and 10 KB bodies, and one attempt-log entry; the figures the README's sizing rule uses. It stores
 * records through the store itself (begin, then complete, with the headers a typical JSON API
 * answers with) on a private redis-server, and reads used_memory before and after.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { RedisStore } from "../src/store/redis.js";

const RECORDS = Number(process.env.SIZING_RECORDS ?? 20_000);
const TTL_MS = 86_400_000;

const HEADERS: [string, string][] = [
  ["content-type", "application/json; charset=utf-8"],
  ["content-length", "1024"],
  ["date", "Mon, 30 Nov 2026 12:00:00 GMT"],
  ["location", "/invoices/INV-2026-004711"],
  ["x-invoice-id", "4711"],
  ["etag", 'W/"400-6f1ed002ab5595859014ebf0951522d9"'],
];

/** A key as the engine makes it: base64url SHA-256 of the key material. */
const storeKey = (i: number) => createHash("sha256").update(`sizing-${i}`).digest("base64url");

async function usedMemory(client: Redis): Promise<number> {
  return Number(/used_memory:(\d+)/.exec(await client.info("memory"))?.[1]);
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "idem-sizing-"));
  const port = 20_000 + Math.floor(Math.random() * 10_000);
  const server: ChildProcess = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  await new Promise<void>((resolve) => {
    let out = "";
    server.stdout?.on("data", (c: Buffer) => {
      out += c.toString();
      if (out.includes("Ready to accept connections")) resolve();
    });
  });
  const url = `redis://127.0.0.1:${port}`;
  const client = new Redis(url);
  const rows: string[] = [];
  try {
    for (const bodyBytes of [1024, 10_240]) {
      await client.flushall();
      const store = new RedisStore({ url, prefix: "idem:", attemptCapacity: 0 });
      await store.connect();
      const body = Buffer.alloc(bodyBytes, "x");
      const before = await usedMemory(client);
      for (let start = 0; start < RECORDS; start += 500) {
        await Promise.all(
          Array.from({ length: Math.min(500, RECORDS - start) }, async (_, j) => {
            const key = storeKey(start + j);
            const token = randomUUID();
            await store.begin(key, {
              token,
              fingerprint: createHash("sha256").update(key).digest("base64url"),
              takeOverUnknown: false,
              leaseMs: 30_000,
              ttlMs: TTL_MS,
              settleMs: 0,
            });
            await store.complete(key, token, { status: 201, headers: HEADERS, body }, TTL_MS);
          }),
        );
      }
      const perRecord = Math.round((await usedMemory(client)) - before) / RECORDS;
      rows.push(`stored answer, ${bodyBytes / 1024} KB body: ${Math.round(perRecord)} bytes per record`);
      await store.close();
    }
    // The attempt log: entries as the gateway writes them, without payloads (audit.payloads: false).
    await client.flushall();
    const log = new RedisStore({ url, prefix: "idem:", attemptCapacity: 10_000 });
    await log.connect();
    const before = await usedMemory(client);
    for (let start = 0; start < 10_000; start += 100) {
      await log.appendAttempts(
        Array.from({ length: 100 }, (_, j) => ({
          time: Date.now(),
          requestId: randomUUID(),
          route: "invoices",
          storeKey: storeKey(start + j),
          material: JSON.stringify({ key: [`INV-2026-${start + j}`, `T-${start + j}`], scope: ["acme"] }),
          outcome: "executed",
          status: 201,
          upstreamMs: 42.5,
        })),
      );
    }
    const perEntry = Math.round(((await usedMemory(client)) - before) / 10_000);
    rows.push(`attempt-log entry (no payload): ${perEntry} bytes; the log keeps audit.attempts of them`);
    await log.close();
    process.stdout.write(
      `redis-server ${(await client.info("server")).match(/redis_version:(\S+)/)?.[1]}, ${RECORDS} records each\n${rows.join("\n")}\n`,
    );
  } finally {
    client.disconnect();
    const exited = once(server, "exit");
    server.kill("SIGTERM");
    await exited;
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
