/**
 * redis-server stopped and started again in the middle of a storm. With AOF on (as the shipped
 * compose file runs it) no key whose answer was given executes again; without persistence every one
 * does, which is why the gateway warns about it at start.
 */

import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { startGateway } from "../../src/gateway/index.js";
import { testConfig } from "../helpers/gateway.js";
import { send } from "../helpers/http.js";
import { startRedis, type TestRedis, until } from "../helpers/redis.js";
import { closeAfterEach } from "../helpers/teardown.js";
import { startCountingUpstream } from "../helpers/upstream.js";

const use = closeAfterEach();
const KEYS = 80;
const COPIES = 4;

async function restartMidStorm(redis: TestRedis) {
  const upstream = use(await startCountingUpstream(5));
  const logged: string[] = [];
  const logger = pino(
    { level: "warn" },
    { write: (line: string) => void logged.push(JSON.parse(line).msg as string) },
  );
  const config = testConfig({ upstream: upstream.url, store: { kind: "redis", redis: { url: redis.url } } });
  const gateway = use(await startGateway(config, { logger }));
  const post = (key: string) =>
    send(`${gateway.url}/invoices`, { headers: { "idempotency-key": key }, body: "{}" });
  const keys = Array.from({ length: KEYS }, (_, i) => `inv-${i}`);

  // The storm, in waves; after the first wave the server stops and starts again while the rest run.
  const answered = new Set<string>();
  const wave = async (batch: string[]) => {
    const replies = await Promise.all(
      batch.flatMap((k) => Array.from({ length: COPIES }, () => post(k).then((r) => [k, r] as const))),
    );
    for (const [k, r] of replies) if (r.status === 201) answered.add(k);
  };
  await wave(keys.slice(0, KEYS / 2));
  const answeredBeforeRestart = new Set(answered);
  const second = wave(keys.slice(KEYS / 2));
  await redis.stop();
  await redis.start();
  await second;
  await until(
    () =>
      gateway.store.ping().then(
        () => true,
        () => false,
      ),
    30_000,
    "store back",
  );
  // Every caller retries until it has an answer (or is told the outcome is unknown).
  const final = new Map<string, number>();
  for (const key of keys) {
    for (let i = 0; i < 20 && ![201, 409].includes(final.get(key) ?? 0); i++)
      final.set(key, (await post(key)).status);
  }
  return { upstream, answeredBeforeRestart, answered, final, logged };
}

describe("a Redis restart in the middle of a storm", () => {
  it("with appendonly yes, executes no key again", async () => {
    const redis = use(
      await startRedis({
        own: true,
        args: ["--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"],
      }),
    );
    const run = await restartMidStorm(redis);
    expect(run.answeredBeforeRestart.size).toBe(KEYS / 2);
    expect([...run.upstream.executions.values()].every((n) => n === 1)).toBe(true);
    // Replayed after the restart: the record came back from the AOF.
    expect([...run.answeredBeforeRestart].map((k) => run.final.get(k))).toEqual(Array(KEYS / 2).fill(201));
    expect(run.logged.join("\n")).not.toMatch(/appendonly/);
    // An answer given while the server was down is stored once it is back: its retries replay it
    // rather than being told the outcome is unknown.
    const given = [...run.answered];
    expect(given.filter((k) => run.final.get(k) !== 201)).toEqual([]);
  }, 60_000);

  it("without persistence, executes every answered key again, and said so at start", async () => {
    const redis = use(await startRedis({ own: true }));
    const run = await restartMidStorm(redis);
    expect(run.logged.join("\n")).toMatch(/no persistence \(appendonly no, save ""\)/);
    const again = [...run.answeredBeforeRestart].filter((k) => (run.upstream.executions.get(k) ?? 0) > 1);
    expect(again).toHaveLength(KEYS / 2);
  }, 60_000);
});
