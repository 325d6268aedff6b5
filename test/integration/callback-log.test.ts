/**
 * The CallbackLog in PostgreSQL (audit.sink: postgres), against a PostgreSQL the file starts itself
 * and kills and restarts: one row per request, through a storm and an outage of the database,
 * readable by key fields, flushed on SIGTERM, bounded by its spool.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { pino } from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { PostgresCallbackLog } from "../../src/audit/callback-log.js";
import { startGateway } from "../../src/gateway/index.js";
import { testConfig } from "../helpers/gateway.js";
import { send } from "../helpers/http.js";
import { startPostgres, type TestPostgres } from "../helpers/postgres.js";
import { runCli, spawnServe } from "../helpers/process.js";
import { rawRequest } from "../helpers/raw.js";
import { until } from "../helpers/redis.js";
import { closeAfterEach } from "../helpers/teardown.js";
import { startUpstream } from "../helpers/upstream.js";

const use = closeAfterEach();
let db: TestPostgres;
let sql: pg.Pool;
let dir: string;

beforeAll(async () => {
  db = await startPostgres();
  sql = new pg.Pool({ connectionString: db.url, max: 2 });
  sql.on("error", () => {});
  dir = await mkdtemp(join(tmpdir(), "idem-callback-"));
}, 60_000);
afterAll(async () => {
  await sql?.end();
  await db?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});
beforeEach(async () => {
  // Every test starts from an empty database: the migrations run again.
  await sql.query("DROP SCHEMA public CASCADE; CREATE SCHEMA public");
});

const rows = async (where = "true") =>
  Number((await sql.query(`SELECT count(*) AS n FROM callback_log WHERE ${where}`)).rows[0].n);

/**
 * A non-idempotent backend: every POST creates an invoice; executions are counted per invoice. Each
 * POST takes `latencyMs`, which a test may change.
 */
async function invoiceBackend() {
  const executions = new Map<string, number>();
  const pace = { latencyMs: 0 };
  const upstream = use(
    await startUpstream(async (call, res) => {
      if (call.method !== "POST") {
        res.end("[]");
        return;
      }
      const invoice = String(JSON.parse(call.body.toString()).invoiceNumber);
      executions.set(invoice, (executions.get(invoice) ?? 0) + 1);
      if (pace.latencyMs > 0) await new Promise((resolve) => setTimeout(resolve, pace.latencyMs));
      res.writeHead(201, { "content-type": "application/json" });
      res.end(JSON.stringify({ id: `${invoice}-${executions.get(invoice)}` }));
    }),
  );
  return Object.assign(upstream, { executions, pace });
}

const ROUTES = [
  {
    name: "callback",
    match: { path: "/callbacks" },
    key: { from: ["body:/invoiceNumber", "body:/transactionId"] },
    scope: ["header:X-Tenant-Id"],
  },
];

async function gatewayWithLog(upstreamUrl: string, spool: string, extra: Record<string, unknown> = {}) {
  return use(
    await startGateway(
      testConfig({
        upstream: upstreamUrl,
        routes: ROUTES,
        audit: { sink: "postgres", postgres: { url: db.url, spool, ...extra } },
      }),
      { logger: pino({ level: "silent" }) },
    ),
  );
}

const callback = (url: string, invoice: number, tx = "T-1") =>
  send(`${url}/callbacks`, {
    headers: { "content-type": "application/json", "x-tenant-id": "acme" },
    body: JSON.stringify({ invoiceNumber: `INV-${invoice}`, transactionId: tx, amount: invoice }),
  });

describe("the CallbackLog", () => {
  it("keeps one row per request through a storm of 200 x 10 and a database outage in its middle", async () => {
    const backend = await invoiceBackend();
    const gateway = await gatewayWithLog(backend.url, join(dir, "storm.spool"));
    const storm = async (from: number, to: number) => {
      for (let start = from; start < to; start += 25) {
        await Promise.all(
          Array.from({ length: 25 }, (_, i) =>
            Array.from({ length: 10 }, () => callback(gateway.url, start + i)),
          ).flat(),
        );
      }
    };
    await storm(0, 100);
    await gateway.flushAttempts();
    // The database dies in the middle of the storm; the second half, which a slow backend (2.5 s
    // per invoice, four waves) stretches to about 10 s, is spooled to disk.
    await db.kill();
    backend.pace.latencyMs = 2_500;
    await storm(100, 200);
    await gateway.flushAttempts();
    const during = await fetch(`${gateway.adminUrl}/readyz`).then(
      (r) => r.json() as Promise<{ status: string; audit: { spooledBytes: number } }>,
    );
    expect(during.status).toBe("degraded");
    expect(during.audit.spooledBytes).toBeGreaterThan(0);
    await db.start();
    await until(async () => (await rows().catch(() => 0)) === 2000, 30_000, "2000 rows");

    expect(await rows()).toBe(2000);
    expect(backend.executions.size).toBe(200);
    expect([...backend.executions.values()].every((n) => n === 1)).toBe(true);
    expect(await rows("outcome = 'executed'")).toBe(200);
    expect(await rows(`key_fields @> '{"invoiceNumber": "INV-42"}'`)).toBe(10);
    await until(
      async () =>
        (await fetch(`${gateway.adminUrl}/readyz`).then((r) => r.json() as Promise<{ status: string }>))
          .status === "ready",
      10_000,
    );
  }, 120_000);

  it("answers what happened to an invoice, by its key fields, through the admin API and inspect", async () => {
    const backend = await invoiceBackend();
    const gateway = await gatewayWithLog(backend.url, join(dir, "inspect.spool"));
    for (let i = 0; i < 3; i++) await callback(gateway.url, 4711);
    await callback(gateway.url, 4712);
    await gateway.flushAttempts();
    const byField = (await fetch(`${gateway.adminUrl}/attempts?field.invoiceNumber=INV-4711`).then((r) =>
      r.json(),
    )) as {
      attempts: {
        outcome: string;
        keyFields: Record<string, string>;
        scope: Record<string, string>;
        status: number;
      }[];
    };
    expect(byField.attempts.map((a) => a.outcome).sort()).toEqual(["executed", "replayed", "replayed"]);
    expect(byField.attempts[0]?.keyFields).toEqual({ invoiceNumber: "INV-4711", transactionId: "T-1" });
    expect(byField.attempts[0]?.scope).toEqual({ "x-tenant-id": "acme" });
    const inspected = await runCli([
      "inspect",
      "--admin",
      gateway.adminUrl as string,
      "callback",
      "INV-4711",
      "T-1",
      "--scope",
      "acme",
    ]);
    expect(inspected.code, inspected.stderr).toBe(0);
    const shown = JSON.parse(inspected.stdout) as { state: string; recentAttempts: unknown[] };
    expect(shown.state).toBe("completed");
    expect(shown.recentAttempts).toHaveLength(3);
    // By one key field alone, and by outcome, from the command line.
    const listed = await runCli([
      "attempts",
      "--admin",
      gateway.adminUrl as string,
      "--field",
      "invoiceNumber=INV-4711",
      "--outcome",
      "replayed",
    ]);
    expect(listed.code, listed.stderr).toBe(0);
    expect((JSON.parse(listed.stdout) as { attempts: unknown[] }).attempts).toHaveLength(2);
    const badTime = await runCli(["attempts", "--admin", gateway.adminUrl as string, "--from", "yesterday"]);
    expect(badTime.code).toBe(2);
    expect(badTime.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("has a row for a request refused before a route was decided, and for one passed through", async () => {
    const backend = await invoiceBackend();
    const gateway = await gatewayWithLog(backend.url, join(dir, "refused.spool"));
    const refused = await send(`${gateway.url}/callbacks`, {
      headers: { "x-http-method-override": "DELETE" },
      body: "{}",
    });
    expect(refused.status).toBe(400);
    await gateway.flushAttempts();
    // A body too large, refused before it is sent (Expect: 100-continue).
    const tooBig = await rawRequest(
      gateway.url,
      [
        "POST /callbacks HTTP/1.1",
        "Host: x",
        "Content-Type: application/json",
        "Content-Length: 5000000",
        "Expect: 100-continue",
        "Connection: close",
        "",
        "",
      ].join("\r\n"),
    );
    expect(tooBig.status).toBe(413);
    // A GET on the route is not protected, and passes through; the trail has it all the same.
    const read = await send(`${gateway.url}/callbacks?invoice=INV-1`, { method: "GET" });
    expect(read.status).toBe(200);
    await gateway.flushAttempts();
    const { rows: logged } = await sql.query(
      "SELECT route, method, outcome, status, error_code FROM callback_log ORDER BY status",
    );
    expect(logged).toEqual([
      { route: "callback", method: "GET", outcome: "passed", status: 200, error_code: null },
      {
        route: "callback",
        method: "POST",
        outcome: "rejected",
        status: 400,
        error_code: "AMBIGUOUS_REQUEST",
      },
      { route: "callback", method: "POST", outcome: "rejected", status: 413, error_code: "BODY_TOO_LARGE" },
    ]);
  });

  it("writes every row before a gateway process exits on SIGTERM", async () => {
    const backend = await invoiceBackend();
    const config = join(dir, "sigterm.yaml");
    await writeFile(
      config,
      JSON.stringify({
        upstream: { url: backend.url },
        routes: ROUTES,
        audit: { sink: "postgres", postgres: { url: db.url, spool: join(dir, "sigterm.spool") } },
        admin: { port: 0 },
        log: { level: "warn" },
      }),
    );
    const gateway = await spawnServe(["--config", config, "--port", "0"]);
    await Promise.all(Array.from({ length: 50 }, (_, i) => callback(gateway.url, i)));
    gateway.proc.kill("SIGTERM");
    expect(await gateway.exited).toBe(0);
    expect(await rows()).toBe(50);
  });

  it("counts rows it had to drop once the spool is full, and says so in /readyz and /metrics", async () => {
    const backend = await invoiceBackend();
    const gateway = await gatewayWithLog(backend.url, join(dir, "full.spool"), { spoolMaxBytes: "2kb" });
    await db.kill();
    try {
      for (let i = 0; i < 40; i++) await callback(gateway.url, i);
      await gateway.flushAttempts();
      const ready = (await fetch(`${gateway.adminUrl}/readyz`).then((r) => r.json())) as {
        status: string;
        audit: { lostRows: number };
      };
      expect(ready.status).toBe("degraded");
      expect(ready.audit.lostRows).toBeGreaterThan(0);
      const metrics = await fetch(`${gateway.adminUrl}/metrics`).then((r) => r.text());
      expect(metrics).toContain(`idempotency_gateway_audit_rows_lost_total ${ready.audit.lostRows}`);
    } finally {
      await db.start();
    }
  });

  it("deletes rows past the retention, and migrate applies the schema once", async () => {
    const first = await runCli(["migrate"], { AUDIT_POSTGRES_URL: db.url });
    expect(first.stdout.trim(), first.stderr).toBe(
      "applied: 001_callback_log.sql, 002_store.sql, 003_store_fast_paths.sql",
    );
    const again = await runCli(["migrate"], { AUDIT_POSTGRES_URL: db.url });
    expect(again.stdout.trim()).toBe("the database is up to date");
    await sql.query(
      `INSERT INTO callback_log (id, at, route, request_id, method, path, outcome, status, instance)
       SELECT gen_random_uuid(), now() - make_interval(days => d), 'r', 'q', 'POST', '/', 'executed', 201, 'i'
       FROM generate_series(1, 120) AS d`,
    );
    const log = await PostgresCallbackLog.open({
      url: db.url,
      spool: join(dir, "retention.spool"),
      spoolMaxBytes: 1_000_000,
      retentionMs: 90 * 86_400_000,
      migrate: true,
      logger: pino({ level: "silent" }),
    });
    try {
      expect(await log.pruneOld()).toBe(31);
      expect(await rows()).toBe(89);
    } finally {
      await log.close();
    }
  });
});
