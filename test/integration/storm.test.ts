import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { startDemoBackend } from "../../src/demo/index.js";
import { DEFAULT_BODY, Pattern, render, runStorm, type StormOptions } from "../../src/storm/index.js";
import { startTestGateway } from "../helpers/gateway.js";
import { runCli } from "../helpers/process.js";
import { closeAfterEach } from "../helpers/teardown.js";
import { startUpstream } from "../helpers/upstream.js";

const use = closeAfterEach();

const options = (target: string, over: Partial<StormOptions> = {}): StormOptions => ({
  target,
  method: "POST",
  keys: 20,
  retries: 3,
  pattern: Pattern.Burst,
  concurrency: 5,
  connections: 32,
  timeoutMs: 10_000,
  backoffMs: 1,
  maxDurationMs: 60_000,
  body: DEFAULT_BODY,
  headers: { "content-type": "application/json", "x-tenant-id": "storm" },
  keyHeader: false,
  ...over,
});

describe("storm counting", () => {
  it("reports every duplicate a non-idempotent backend creates: keys x retries", async () => {
    const backend = use(await startDemoBackend({ port: 0 }));
    const r = await runStorm(options(`${backend.url}/invoices`, { statsUrl: `${backend.url}/stats` }));
    expect(r.sends).toBe(80);
    expect(r.statuses).toEqual({ "201": 80 });
    expect(r.backend).toEqual({ executions: 80, duplicates: 60 });
    expect(r.consistency).toEqual({ succeeded: 20, inconsistent: 20 });
    expect(r.replayed).toBe(0);
  });

  it("reports exactly k duplicates for a backend that duplicates exactly k operations", async () => {
    const k = 7;
    const seen = new Map<string, number>();
    let executions = 0;
    let duplicates = 0;
    const upstream = use(
      await startUpstream((call, res) => {
        if (call.method === "GET") {
          res.end(JSON.stringify({ executions, distinctKeys: seen.size, duplicates }));
          return;
        }
        const key = String(call.headers["idempotency-key"]);
        const index = Number(key.split("-").at(-1));
        const n = (seen.get(key) ?? 0) + 1;
        seen.set(key, n);
        // The first k operations execute twice (a new body each time); every other send is a replay.
        const executes = n === 1 || (index < k && n === 2);
        if (executes) executions++;
        if (executes && n === 2) duplicates++;
        if (!executes) res.setHeader("idempotent-replayed", "true");
        res.end(executes ? `exec-${key}-${n}` : `exec-${key}-1`);
      }),
    );
    const r = await runStorm(
      options(`${upstream.url}/x`, { keyHeader: true, retries: 2, statsUrl: `${upstream.url}/stats` }),
    );
    expect(r.backend).toEqual({ executions: 20 + k, duplicates: k });
    expect(r.replayed).toBe(20 * 3 - (20 + k));
    expect(r.consistency.inconsistent).toBe(k);
  });

  it("counts statuses, conflicts, mismatches and replays exactly", async () => {
    let n = 0;
    const upstream = use(
      await startUpstream((_call, res) => {
        n++;
        const status = n % 4 === 0 ? 409 : n % 4 === 1 ? 422 : 200;
        res.writeHead(status, n % 2 === 0 ? { "idempotent-replayed": "true" } : {});
        res.end("same");
      }),
    );
    const r = await runStorm(options(`${upstream.url}/x`, { keys: 10, retries: 3 }));
    expect(r.sends).toBe(40);
    expect(r.statuses).toEqual({ "200": 20, "409": 10, "422": 10 });
    expect(r.conflicts).toBe(10);
    expect(r.mismatches).toBe(10);
    expect(r.replayed).toBe(20);
    expect(r.consistency.inconsistent).toBe(0);
  });

  it("retries after a client timeout with the timeout pattern, and stops at the first answer", async () => {
    const first = new Set<string>();
    const upstream = use(
      await startUpstream((call, res) => {
        const key = JSON.parse(call.body.toString()).invoiceNumber as string;
        if (first.has(key)) return void res.end("late but fine");
        first.add(key);
        // The first send of every operation never gets an answer in time.
      }),
    );
    const r = await runStorm(
      options(`${upstream.url}/x`, { keys: 5, retries: 3, pattern: Pattern.Timeout, timeoutMs: 200 }),
    );
    expect(r.sends).toBe(10);
    expect(r.timeouts).toBe(5);
    expect(r.statuses["200"]).toBe(5);
  });

  it("backs off and retries on 503 until an answer is final", async () => {
    const calls = new Map<string, number>();
    const upstream = use(
      await startUpstream((call, res) => {
        const key = JSON.parse(call.body.toString()).invoiceNumber as string;
        const n = (calls.get(key) ?? 0) + 1;
        calls.set(key, n);
        res.writeHead(n < 3 ? 503 : 201);
        res.end();
      }),
    );
    const r = await runStorm(options(`${upstream.url}/x`, { keys: 4, retries: 5, pattern: Pattern.Backoff }));
    expect(r.sends).toBe(12);
    expect(r.statuses).toEqual({ "201": 4, "503": 8 });
  });

  it("proves the gateway: no duplicates and identical answers through it", async () => {
    const backend = use(await startDemoBackend({ port: 0 }));
    const gateway = use(
      await startTestGateway({
        upstream: backend.url,
        routes: [
          {
            name: "inv",
            match: { path: "/invoices" },
            key: { from: ["body:/invoiceNumber", "body:/transactionId"] },
            scope: ["header:X-Tenant-Id"],
          },
        ],
      }),
    );
    const r = await runStorm(
      options(`${gateway.url}/invoices`, { retries: 9, statsUrl: `${backend.url}/stats` }),
    );
    expect(r.backend).toEqual({ executions: 20, duplicates: 0 });
    expect(r.consistency).toEqual({ succeeded: 20, inconsistent: 0 });
    expect(r.replayed).toBe(180);
  });

  it("stops at the max duration with everything accounted for", async () => {
    const upstream = use(await startUpstream(() => {}));
    const r = await runStorm(options(`${upstream.url}/x`, { keys: 1000, maxDurationMs: 300 }));
    expect(r.stoppedEarly).toBe(true);
    expect(r.operations).toBeLessThan(1000);
    expect(r.errors + r.timeouts).toBe(r.sends);
  });

  it("fills only the known placeholders of a template", () => {
    expect(render('{"k":"{key}","i":{i},"r":"{run}","x":"{other}"}', { key: "K", i: 3, run: "R" })).toBe(
      '{"k":"K","i":3,"r":"R","x":"{other}"}',
    );
  });
});

describe("storm command", () => {
  it("prints both storms side by side and writes the JSON report", async () => {
    const backend = use(await startDemoBackend({ port: 0 }));
    const gateway = use(
      await startTestGateway({
        upstream: backend.url,
        routes: [
          {
            name: "inv",
            match: { path: "/invoices" },
            key: { from: ["body:/invoiceNumber"] },
            scope: ["header:X-Tenant-Id"],
          },
        ],
      }),
    );
    const json = join(tmpdir(), `storm-${process.pid}.json`);
    const r = await runCli([
      "storm",
      "--target",
      `${gateway.url}/invoices`,
      "--compare",
      `${backend.url}/invoices`,
      "--keys",
      "10",
      "--retries",
      "4",
      "--stats-url",
      `${backend.url}/stats`,
      "--json",
      json,
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/duplicates created\s+0\s+40/);
    expect(r.stdout).toMatch(/replayed \(Idempotent-Replayed\)\s+40\s+0/);
    expect(r.stderr).not.toContain("storm http"); // no progress bar when not on a terminal
    const reports = JSON.parse(await readFile(json, "utf8")) as { backend: { duplicates: number } }[];
    expect(reports.map((x) => x.backend.duplicates)).toEqual([0, 40]);
  });

  it("gives up on every send at --timeout while the garbage collector runs (Node 20 drops AbortSignal.timeout)", async () => {
    const silent = use(await startUpstream(() => {})); // never answers
    const dir = await mkdtemp(join(tmpdir(), "storm-gc-"));
    use({ close: () => rm(dir, { recursive: true, force: true }) });
    const preload = join(dir, "gc.mjs");
    await writeFile(preload, "setInterval(() => globalThis.gc(), 2).unref();\n");
    const json = join(dir, "report.json");
    const r = await runCli(
      [
        "storm",
        "--target",
        `${silent.url}/x`,
        "--keys",
        "30",
        "--retries",
        "0",
        "--pattern",
        "timeout",
        "--concurrency",
        "30",
        "--timeout",
        "100ms",
        "--max-duration",
        "10s",
        "--json",
        json,
      ],
      { NODE_OPTIONS: `--expose-gc --import=${pathToFileURL(preload).href}` },
    );
    expect(r.stderr).toBe("");
    const report = JSON.parse(await readFile(json, "utf8")) as { timeouts: number; stoppedEarly: boolean };
    expect(report).toMatchObject({ timeouts: 30, stoppedEarly: false });
  });

  it("refuses a report file it could not write before sending anything, with one clear line", async () => {
    const backend = use(await startDemoBackend({ port: 0 }));
    const r = await runCli([
      "storm",
      "--target",
      `${backend.url}/invoices`,
      "--stats-url",
      `${backend.url}/stats`,
      "--html",
      join(tmpdir(), "no-such-dir", "report.html"),
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toContain("--html");
    expect(r.stderr).toContain("ENOENT");
    const stats = (await (await fetch(`${backend.url}/stats`)).json()) as { executions: number };
    expect(stats.executions).toBe(0);
  });

  it("refuses a bad flag with one clear line", async () => {
    const r = await runCli(["storm", "--target", "not a url"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("expected a URL");
  });
});
