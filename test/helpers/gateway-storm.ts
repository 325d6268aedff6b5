import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Reply, send } from "./http.js";
import { type GatewayProcess, spawnServe } from "./process.js";
import { startCountingUpstream } from "./upstream.js";

export interface StormShape {
  keys: number;
  copies: number;
  keysAtOnce: number;
}

/**
 * Three gateway processes on one shared store, a storm of `keys` x `copies` concurrent copies spread
 * over them: each key executes once, and every copy gets the same answer. `store` is the YAML of
 * `store` (a flow mapping), read when the suite starts.
 */
export function describeThreeGatewayStorm(name: string, store: () => string, shape: StormShape): void {
  let upstream: Awaited<ReturnType<typeof startCountingUpstream>>;
  const gateways: GatewayProcess[] = [];

  describe(`three gateway processes on ${name}`, () => {
    beforeAll(async () => {
      upstream = await startCountingUpstream(50);
      const dir = await mkdtemp(join(tmpdir(), "idem-multi-"));
      const config = join(dir, "gateway.yaml");
      await writeFile(
        config,
        `upstream: { url: "${upstream.url}" }\nstore: ${store()}\nlog: { level: warn }\nadmin: { port: 0 }\n`,
      );
      for (let i = 0; i < 3; i++) gateways.push(await spawnServe(["--config", config, "--port", "0"]));
    }, 60_000);

    afterAll(async () => {
      await Promise.all(
        gateways.splice(0).map(async (g) => {
          g.proc.kill("SIGTERM");
          await g.exited;
        }),
      );
      await upstream?.close();
    });

    const { keys, copies, keysAtOnce } = shape;
    it(`executes ${keys} keys x ${copies} concurrent copies exactly once each, every answer identical`, async () => {
      const answers = new Map<string, Reply[]>();
      const storm = async (k: number) => {
        const key = `storm-${k}`;
        const replies = await Promise.all(
          Array.from({ length: copies }, (_, copy) =>
            send(`${(gateways[(k + copy) % gateways.length] as GatewayProcess).url}/invoices`, {
              headers: { "idempotency-key": key, "content-type": "application/json" },
              body: JSON.stringify({ invoiceNumber: key, amount: k }),
            }),
          ),
        );
        answers.set(key, replies);
      };
      for (let start = 0; start < keys; start += keysAtOnce) {
        await Promise.all(
          Array.from({ length: Math.min(keysAtOnce, keys - start) }, (_, i) => storm(start + i)),
        );
      }

      expect(upstream.calls).toHaveLength(keys);
      expect([...upstream.executions.values()].every((n) => n === 1)).toBe(true);
      for (const [key, replies] of answers) {
        const statuses = replies.map((r) => r.status);
        const odd = replies.find((r) => r.status !== 201);
        expect(statuses, `${key}: ${odd?.body.toString()}\n${gateways[0]?.output().slice(0, 3000)}`).toEqual(
          Array(copies).fill(201),
        );
        const bodies = new Set(replies.map((r) => r.body.toString("base64")));
        const ids = new Set(replies.map((r) => r.headers["x-invoice-id"]));
        expect(bodies.size, key).toBe(1);
        expect(ids.size, key).toBe(1);
      }
      const replayed = [...answers.values()]
        .flat()
        .filter((r) => r.headers["idempotent-replayed"] === "true");
      expect(replayed).toHaveLength(keys * (copies - 1));
    }, 120_000);
  });
}
