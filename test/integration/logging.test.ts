/**
 * The gateway's standard output, read by someone else: a log shipper, a container runtime. A reader
 * that stops must not stop the gateway.
 */
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Pool, request } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import { type GatewayProcess, spawnServe } from "../helpers/process.js";
import { startUpstream, type TestUpstream } from "../helpers/upstream.js";

let upstream: TestUpstream | undefined;
let gw: GatewayProcess | undefined;
afterEach(async () => {
  if (gw && gw.proc.exitCode === null && gw.proc.signalCode === null) {
    gw.proc.kill("SIGKILL");
    await gw.exited;
  }
  await upstream?.close();
  gw = undefined;
  upstream = undefined;
});

describe("standard output", () => {
  it("keeps answering while nobody reads the log, counts what it dropped, and says so once read", async () => {
    upstream = await startUpstream();
    const dir = await mkdtemp(join(tmpdir(), "idem-log-"));
    const config = join(dir, "gateway.yaml");
    await writeFile(
      config,
      `upstream: { url: "${upstream.url}" }\nstore: { kind: memory }\nlog: { buffer: 16kb }\n`,
    );
    gw = await spawnServe(["--config", config, "--port", "0", "--admin-port", "0"]);
    const admin = /admin (http:\/\/[^\s)]+)/.exec(gw.output())?.[1];
    expect(admin).toBeDefined();
    // From here on nobody reads: the pipe and this end's buffer hold a few hundred lines at most.
    gw.proc.stdout?.pause();
    // 2,000 protected requests, an access line each (about 250 bytes): several times what fits.
    const pool = new Pool(gw.url, { connections: 20, headersTimeout: 10_000, bodyTimeout: 10_000 });
    const statuses: number[] = [];
    try {
      for (let batch = 0; batch < 100; batch++) {
        const sent = Array.from({ length: 20 }, async (_, i) => {
          const r = await pool.request({
            method: "POST",
            path: "/invoices",
            headers: { "idempotency-key": `log-${batch}-${i}`, "content-type": "application/json" },
            body: "{}",
          });
          await r.body.dump();
          return r.statusCode;
        });
        statuses.push(...(await Promise.all(sent)));
      }
    } finally {
      await pool.close();
    }
    expect(statuses).toHaveLength(2_000);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    const metrics = await (await request(`${admin}/metrics`)).body.text();
    const dropped = Number(/^idempotency_gateway_log_lines_dropped_total (\d+)$/m.exec(metrics)?.[1]);
    expect(dropped).toBeGreaterThan(0);
    // Once read again, the log catches up and says how many lines it dropped.
    gw.proc.stdout?.resume();
    await gw.waitForOutput('"droppedLines":');
    const warning = gw
      .output()
      .split("\n")
      .find((l) => l.includes('"droppedLines":'));
    expect(JSON.parse(warning as string)).toMatchObject({ level: 40, droppedLines: dropped });
  });
});
