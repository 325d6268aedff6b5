import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { RunningGateway } from "../../src/gateway/index.js";
import { RedisStore } from "../../src/store/redis.js";
import { startTestGateway } from "../helpers/gateway.js";
import { send } from "../helpers/http.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";
import { gate, startUpstream, type TestUpstream } from "../helpers/upstream.js";

let redis: TestRedis;
let upstream: TestUpstream | undefined;
let gateway: RunningGateway | undefined;
let n = 0;

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.close();
});
afterEach(async () => {
  await gateway?.close();
  await upstream?.close();
  gateway = undefined;
  upstream = undefined;
});

async function setup(handler?: Parameters<typeof startUpstream>[0], config: Record<string, unknown> = {}) {
  upstream = await startUpstream(handler);
  const store = new RedisStore({ url: redis.url, prefix: `gw${n++}:` });
  await store.connect();
  gateway = await startTestGateway({ upstream: upstream.url, store: { kind: "redis" }, ...config }, store);
  return { up: upstream, gw: gateway };
}

/** Counts the commands clients send to Redis (a script's inner calls are not round trips). */
async function commandCounter(url: string) {
  const monitor = await new Redis(url).monitor();
  const probe = new Redis(url);
  const seen: string[][] = [];
  let markers = 0;
  const waiting = new Map<string, () => void>();
  monitor.on("monitor", (_time: string, args: string[], source: string) => {
    if (args[0]?.toLowerCase() === "echo" && waiting.has(args[1] as string)) {
      waiting.get(args[1] as string)?.();
      return;
    }
    // The attempt log is written in batches off the request path: not part of a request's round trips.
    if (source !== "lua" && !args.some((a) => a.endsWith(":attempts"))) seen.push(args);
  });
  return {
    /** Every command sent since the last call, once Redis has shown all of them to the monitor. */
    async take(): Promise<string[][]> {
      const marker = `marker-${markers++}`;
      const shown = new Promise<void>((resolve) => waiting.set(marker, resolve));
      await probe.echo(marker);
      await shown;
      return seen.splice(0);
    },
    async close() {
      monitor.disconnect();
      probe.disconnect();
    },
  };
}

describe("redis store behind the gateway", () => {
  it("costs one round trip per replay and two per first attempt (begin answers the read)", async () => {
    const { gw } = await setup();
    await send(`${gw.url}/warm`, { headers: { "idempotency-key": "warm-up" }, body: "{}" });
    const counter = await commandCounter(redis.url);
    try {
      await counter.take();
      const first = await send(`${gw.url}/pay`, { headers: { "idempotency-key": "rt-1" }, body: "{}" });
      const firstCommands = await counter.take();
      const replay = await send(`${gw.url}/pay`, { headers: { "idempotency-key": "rt-1" }, body: "{}" });
      const replayCommands = await counter.take();
      expect(first.status).toBe(200);
      expect(replay.headers["idempotent-replayed"]).toBe("true");
      // begin (the read, the lease and the in-flight mark in one script), then complete.
      expect(firstCommands.length, JSON.stringify(firstCommands)).toBe(2);
      expect(firstCommands.every((c) => c[0]?.toLowerCase() === "evalsha")).toBe(true);
      expect(replayCommands.length, JSON.stringify(replayCommands)).toBe(1);
    } finally {
      await counter.close();
    }
  });

  it("replays large JSON and non-UTF-8 bytes byte for byte", async () => {
    const big = Buffer.from(
      JSON.stringify({ rows: Array.from({ length: 20_000 }, (_, i) => ({ i, s: "é✓" })) }),
    );
    const binary = Buffer.from([0xff, 0xfe, 0, 0x80, 0xc3, 0x28]);
    const { up, gw } = await setup((call, res) => {
      res.end(call.url === "/big" ? big : binary);
    });
    for (const [path, body] of [
      ["/big", big],
      ["/bin", binary],
    ] as const) {
      const first = await send(`${gw.url}${path}`, { headers: { "idempotency-key": path }, body: "{}" });
      const retry = await send(`${gw.url}${path}`, { headers: { "idempotency-key": path }, body: "{}" });
      expect(first.body.equals(body)).toBe(true);
      expect(retry.body.equals(body)).toBe(true);
      expect(retry.headers["idempotent-replayed"]).toBe("true");
    }
    expect(up.calls).toHaveLength(2);
  });

  it("keeps no client string in Redis key names", async () => {
    const { gw } = await setup();
    await send(`${gw.url}/x`, { headers: { "idempotency-key": "client-secret-4711" }, body: "{}" });
    const keys = await new Redis(redis.url).keys("*").then((k) => k);
    expect(keys.length).toBeGreaterThan(0);
    expect(keys.join(" ")).not.toContain("4711");
  });

  it("extends the lease of a slow upstream call, so duplicates arriving after lockTtl still wait", async () => {
    const hold = gate();
    // The call outlives three lease periods; each duplicate arrives after the first lease would have ended.
    const { up, gw } = await setup(
      async (_c, res) => {
        await hold.promise;
        res.end("slow but once");
      },
      { defaults: { lockTtl: "300ms", waitTimeout: "20s" } },
    );
    const headers = { "idempotency-key": "slow-1" };
    const first = send(`${gw.url}/x`, { headers, body: "{}" });
    await up.called(1);
    const dups = [];
    for (let i = 0; i < 3; i++) {
      await new Promise((resolve) => setTimeout(resolve, 350));
      dups.push(send(`${gw.url}/x`, { headers, body: "{}" }));
    }
    hold.open();
    const replies = await Promise.all([first, ...dups]);
    expect(up.calls).toHaveLength(1);
    expect(replies.map((r) => r.body.toString())).toEqual(Array(4).fill("slow but once"));
  });
});
