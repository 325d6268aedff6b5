/**
 * What a completed record really holds on the heap, against what the memory store counts it as:
 * `N` first attempts through the real engine and memory store, with keys, fingerprints and a
 * response shaped like the gateway's; and what one kept request id holds. Run with --expose-gc;
 * prints one JSON line.
 */
import { createHash, randomBytes } from "node:crypto";
import { parseConfig, type RouteSettings, RouteTable } from "../../src/config/index.js";
import { IdempotencyEngine } from "../../src/idempotency/index.js";
import { newId } from "../../src/ids.js";
import { MemoryStore } from "../../src/store/index.js";

const n = Number(process.argv[2] ?? 20_000);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --expose-gc");
const settings = new RouteTable(
  parseConfig({ upstream: { url: "http://127.0.0.1:1" }, routes: [{ name: "r", match: { path: "/r" } }] }),
).routes[0]?.settings as RouteSettings;
const digest = () => createHash("sha256").update(randomBytes(16)).digest("base64url");
const body = Buffer.alloc(64, "x");

const store = new MemoryStore({ maxEntries: n + 1, maxBytes: Number.MAX_SAFE_INTEGER });
const engine = new IdempotencyEngine(store);
const keys = Array.from({ length: n }, digest);
const fingerprints = Array.from({ length: n }, digest);
gc();
const before = process.memoryUsage();
for (let i = 0; i < n; i++) {
  await engine.handle(settings, keys[i] as string, fingerprints[i] as string, async () => ({
    status: 201,
    headers: [["content-type", "application/json"]],
    body: Buffer.from(body),
  }));
}
gc();
const after = process.memoryUsage();
const held = after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers);
const records = store.size;
const countedPerRecord = store.countedBytes / n;
await store.close();

const ids = new Array<string>(n);
gc();
const idsBefore = process.memoryUsage().heapUsed;
for (let i = 0; i < n; i++) ids[i] = newId();
gc();
const heldPerId = (process.memoryUsage().heapUsed - idsBefore) / n;

process.stdout.write(
  `${JSON.stringify({ records, heldPerRecord: held / n, countedPerRecord, ids: ids.length, heldPerId })}\n`,
);
