import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { send } from "../helpers/http.js";
import { type GatewayProcess, runCli, spawnServe } from "../helpers/process.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";
import { startCountingUpstream } from "../helpers/upstream.js";

const KEYS = 100;
const COPIES = 10;

let redis: TestRedis;
let upstream: Awaited<ReturnType<typeof startCountingUpstream>>;
let gw: GatewayProcess | undefined;

beforeAll(async () => {
  redis = await startRedis();
  upstream = await startCountingUpstream(20);
});
afterAll(async () => {
  if (gw && gw.proc.exitCode === null) gw.proc.kill("SIGKILL");
  await upstream?.close();
  await redis?.close();
});

describe("serve --workers", () => {
  it("is refused with the memory store, in one clear line", async () => {
    const r = await runCli(["serve", "--workers", "2", "--port", "0", "--upstream", upstream.url]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--workers needs store.kind: redis");
  });

  it("runs worker processes that pass the exactly-once storm, with metrics aggregated by the primary", async () => {
    const dir = await mkdtemp(join(tmpdir(), "idem-workers-"));
    const config = join(dir, "gateway.yaml");
    await writeFile(
      config,
      `upstream: { url: "${upstream.url}" }\nstore: { kind: redis, redis: { url: "${redis.url}", prefix: "workers:" } }\n` +
        "log: { level: warn }\nadmin: { port: 0 }\n",
    );
    gw = await spawnServe(["--config", config, "--port", "0", "--workers", "2"]);
    expect(gw.output()).toContain("2 workers");
    const adminUrl = /admin (http:\/\/[^\s)]+)/.exec(gw.output())?.[1] as string;

    const bodies = new Map<string, Set<string>>();
    for (let start = 0; start < KEYS; start += 25) {
      await Promise.all(
        Array.from({ length: 25 }, async (_, i) => {
          const key = `w-${start + i}`;
          const replies = await Promise.all(
            Array.from({ length: COPIES }, () =>
              send(`${gw?.url}/invoices`, { headers: { "idempotency-key": key }, body: "{}" }),
            ),
          );
          expect(replies.map((r) => r.status)).toEqual(Array(COPIES).fill(201));
          bodies.set(key, new Set(replies.map((r) => r.body.toString())));
        }),
      );
    }
    expect(upstream.calls).toHaveLength(KEYS);
    expect([...upstream.executions.values()].every((n) => n === 1)).toBe(true);
    expect([...bodies.values()].every((s) => s.size === 1)).toBe(true);

    const metrics = (await send(`${adminUrl}/metrics`, { method: "GET" })).body.toString();
    const total = [...metrics.matchAll(/^idempotency_gateway_requests_total\{[^}]*\} (\d+)$/gm)].reduce(
      (sum, m) => sum + Number(m[1]),
      0,
    );
    expect(total).toBe(KEYS * COPIES);
    expect((await send(`${adminUrl}/readyz`, { method: "GET" })).status).toBe(200);

    gw.proc.kill("SIGTERM");
    expect(await gw.exited).toBe(0);
  }, 120_000);
});
