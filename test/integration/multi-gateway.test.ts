import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Reply, send } from "../helpers/http.js";
import { type GatewayProcess, spawnServe } from "../helpers/process.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";
import { startCountingUpstream } from "../helpers/upstream.js";

const KEYS = 300;
const COPIES = 10;
const KEYS_AT_ONCE = 50;

let redis: TestRedis;
let upstream: Awaited<ReturnType<typeof startCountingUpstream>>;
const gateways: GatewayProcess[] = [];

beforeAll(async () => {
  redis = await startRedis();
  upstream = await startCountingUpstream(50);
  const dir = await mkdtemp(join(tmpdir(), "idem-multi-"));
  const config = join(dir, "gateway.yaml");
  await writeFile(
    config,
    `upstream: { url: "${upstream.url}" }\nstore: { kind: redis, redis: { url: "${redis.url}", prefix: "multi:" } }\nlog: { level: warn }\nadmin: { port: 0 }\n`,
  );
  for (let i = 0; i < 3; i++) gateways.push(await spawnServe(["--config", config, "--port", "0"]));
}, 60_000);

afterAll(async () => {
  await Promise.all(
    gateways.map(async (g) => {
      g.proc.kill("SIGTERM");
      await g.exited;
    }),
  );
  await upstream?.close();
  await redis?.close();
});

describe("three gateway processes on one Redis", () => {
  it(`executes ${KEYS} keys x ${COPIES} concurrent copies exactly once each, every answer identical`, async () => {
    const answers = new Map<string, Reply[]>();
    const storm = async (k: number) => {
      const key = `storm-${k}`;
      const replies = await Promise.all(
        Array.from({ length: COPIES }, (_, copy) =>
          send(`${(gateways[(k + copy) % gateways.length] as GatewayProcess).url}/invoices`, {
            headers: { "idempotency-key": key, "content-type": "application/json" },
            body: JSON.stringify({ invoiceNumber: key, amount: k }),
          }),
        ),
      );
      answers.set(key, replies);
    };
    for (let start = 0; start < KEYS; start += KEYS_AT_ONCE) {
      await Promise.all(
        Array.from({ length: Math.min(KEYS_AT_ONCE, KEYS - start) }, (_, i) => storm(start + i)),
      );
    }

    expect(upstream.calls).toHaveLength(KEYS);
    expect([...upstream.executions.values()].every((n) => n === 1)).toBe(true);
    for (const [key, replies] of answers) {
      const statuses = replies.map((r) => r.status);
      expect(statuses, key).toEqual(Array(COPIES).fill(201));
      const bodies = new Set(replies.map((r) => r.body.toString("base64")));
      const ids = new Set(replies.map((r) => r.headers["x-invoice-id"]));
      expect(bodies.size, key).toBe(1);
      expect(ids.size, key).toBe(1);
    }
    const replayed = [...answers.values()].flat().filter((r) => r.headers["idempotent-replayed"] === "true");
    expect(replayed).toHaveLength(KEYS * (COPIES - 1));
  }, 120_000);
});
