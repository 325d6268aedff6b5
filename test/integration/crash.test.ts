import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { send } from "../helpers/http.js";
import { type GatewayProcess, spawnServe } from "../helpers/process.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";
import { gate, startUpstream, type TestUpstream } from "../helpers/upstream.js";

let redis: TestRedis;
let upstream: TestUpstream | undefined;
const procs: GatewayProcess[] = [];
let n = 0;

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.close();
});
afterEach(async () => {
  for (const p of procs.splice(0)) {
    if (p.proc.exitCode === null && p.proc.signalCode === null) {
      p.proc.kill("SIGCONT");
      p.proc.kill("SIGKILL");
      await p.exited;
    }
  }
  await upstream?.close();
  upstream = undefined;
});

/** Gateways sharing one Redis prefix per test, as real `serve` processes. */
async function gateways(count: number, defaults: string): Promise<GatewayProcess[]> {
  const dir = await mkdtemp(join(tmpdir(), "idem-crash-"));
  const file = join(dir, "gateway.yaml");
  await writeFile(
    file,
    `upstream: { url: "${upstream?.url}" }\n` +
      `store: { kind: redis, redis: { url: "${redis.url}", prefix: "crash${n++}:" } }\n` +
      `log: { level: error }\nadmin: { port: 0 }\ndefaults: ${defaults}\n`,
  );
  const started: GatewayProcess[] = [];
  for (let i = 0; i < count; i++) started.push(await spawnServe(["--config", file, "--port", "0"]));
  procs.push(...started);
  return started;
}

const pay = (url: string, key: string) =>
  send(`${url}/pay`, { headers: { "idempotency-key": key }, body: "{}" });

describe("gateway processes that die or stall", () => {
  it("a gateway killed (SIGKILL) mid-request leaves the key unknown once its lease runs out, not free", async () => {
    const hold = gate();
    upstream = await startUpstream(async (_c, res) => {
      await hold.promise;
      res.end("too late");
    });
    const [a, b] = (await gateways(2, "{ lockTtl: 600ms, waitTimeout: 10s }")) as [
      GatewayProcess,
      GatewayProcess,
    ];
    const lost = pay(a.url, "kill-1").catch((e: Error) => e);
    await upstream.called(1);
    a.proc.kill("SIGKILL");
    await a.exited;
    expect(await lost).toBeInstanceOf(Error);
    // B waits while the dead gateway's lease lasts, then sees the outcome is unknown.
    const retry = await pay(b.url, "kill-1");
    hold.open();
    expect(retry.status).toBe(409);
    expect(retry.json()).toMatchObject({ code: "OUTCOME_UNKNOWN", state: "unknown" });
    expect(upstream.calls).toHaveLength(1);
  });

  it("an attempt that lost its lease (process paused) cannot overwrite the attempt that took over", async () => {
    const first = gate();
    let calls = 0;
    upstream = await startUpstream(async (_c, res) => {
      calls++;
      if (calls === 1) {
        await first.promise;
        res.end("from the paused attempt");
      } else res.end("from the attempt that took over");
    });
    const [a, b] = (await gateways(2, "{ lockTtl: 600ms, waitTimeout: 10s, onUnknown: retry }")) as [
      GatewayProcess,
      GatewayProcess,
    ];
    const paused = pay(a.url, "fence-1");
    await upstream.called(1);
    a.proc.kill("SIGSTOP");
    // A cannot extend its lease while stopped; B's copy waits and sees it run out. A copy that waited
    // never executes itself (409); its retry takes over (onUnknown: retry).
    const waited = await pay(b.url, "fence-1");
    expect(waited.status).toBe(409);
    expect(waited.json()).toMatchObject({ code: "OUTCOME_UNKNOWN" });
    const takeover = await pay(b.url, "fence-1");
    expect(takeover.body.toString()).toBe("from the attempt that took over");
    a.proc.kill("SIGCONT");
    first.open();
    // A's own caller still gets A's answer, but A's write is refused: the stored answer is B's.
    expect((await paused).body.toString()).toBe("from the paused attempt");
    for (const g of [a, b]) {
      const replay = await pay(g.url, "fence-1");
      expect(replay.headers["idempotent-replayed"]).toBe("true");
      expect(replay.body.toString()).toBe("from the attempt that took over");
    }
    expect(calls).toBe(2);
  });

  it("SIGTERM drains: the attempt under way is stored, and a retry at another gateway gets it", async () => {
    const hold = gate();
    upstream = await startUpstream(async (_c, res) => {
      await hold.promise;
      res.end("stored while draining");
    });
    const [a, b] = (await gateways(2, "{ waitTimeout: 10s }")) as [GatewayProcess, GatewayProcess];
    const original = pay(a.url, "drain-1");
    await upstream.called(1);
    a.proc.kill("SIGTERM");
    await a.waitForOutput("SIGTERM: draining");
    const retry = pay(b.url, "drain-1");
    hold.open();
    expect((await original).body.toString()).toBe("stored while draining");
    expect(await a.exited).toBe(0);
    const replayed = await retry;
    expect(replayed.body.toString()).toBe("stored while draining");
    expect(replayed.headers["idempotent-replayed"]).toBe("true");
    expect(upstream.calls).toHaveLength(1);
  });
});
