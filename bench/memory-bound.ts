/**
 * What the memory store's bounds hold back: 200,000 distinct completed records with 1 KB bodies,
 * written into a store with the default bounds or none; one mode per process:
 *   node --expose-gc --import tsx bench/memory-bound.ts bounded
 *   node --expose-gc --import tsx bench/memory-bound.ts unbounded
 */
import { MemoryStore } from "../src/store/index.js";

const bounded = process.argv[2] !== "unbounded";
const body = Buffer.alloc(1024, "x");
const gc = (globalThis as { gc?: () => void }).gc;
gc?.();
const held = () => {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};
const before = held();
let evicted = 0;
const store = new MemoryStore(
  bounded
    ? { onEvict: () => evicted++ }
    : { maxEntries: Number.MAX_SAFE_INTEGER, maxBytes: Number.MAX_SAFE_INTEGER },
);
const lease = { fingerprint: "f", takeOverUnknown: false, leaseMs: 10_000, ttlMs: 86_400_000, settleMs: 0 };
for (let i = 0; i < 200_000; i++) {
  const key = `key-${i}`.padEnd(43, "x");
  await store.begin(key, { ...lease, token: "t" });
  await store.complete(
    key,
    "t",
    { status: 201, headers: [["content-type", "application/json"]], body: Buffer.from(body) },
    lease.ttlMs,
  );
}
gc?.();
const grown = Math.round((held() - before) / 1e6);
console.log(
  `${bounded ? "default bounds" : "unbounded"}: ${store.size} records kept, ${evicted} evicted, heap + buffers +${grown} MB`,
);
await store.close();
