/**
 * The floor of a first attempt on the memory store with this gateway's stack: the bare proxy
 * (floor-proxy.mjs) plus the least an embedded store must do: refuse a key that has a record, write
 * an in-flight record, replace it with the answer, and keep answers up to the gateway's default
 * bound (100,000, oldest evicted first), as the gateway keeps them for a day. No key derivation,
 * fingerprint, lease, fencing, log or metrics: whatever the gateway costs beyond this is its own.
 *
 * `bench/interleaved.sh memory` runs it (FLOOR=1) with the peer benchmark's packages, as that proxy
 * runs. Env: PORT, UPSTREAM.
 */
import { serveFloor } from "./floor-proxy.mjs";

const MAX_RECORDS = 100_000;
const records = new Map();
// Oldest first; a head index rather than shift(), which copies the array.
let order = [];
let head = 0;

serveFloor({
  begin(key) {
    if (records.has(key)) return false;
    records.set(key, { state: "in_flight", since: Date.now() });
    return true;
  },
  store(key, status, headers, body) {
    records.set(key, { state: "completed", status, headers, body });
    order.push(key);
    if (records.size <= MAX_RECORDS) return;
    records.delete(order[head++]);
    if (head > MAX_RECORDS) {
      order = order.slice(head);
      head = 0;
    }
  },
});
