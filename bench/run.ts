/**
 * `npm run bench`: throughput and latency of the gateway as ratios to the direct backend measured in
 * the same run, on this machine. Not a test: it asserts nothing, it reports. Every process it starts
 * listens on 127.0.0.1 and every load loop is bounded in time.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as hdr from "hdr-histogram-js";
import { Redis } from "ioredis";
import { Agent, Pool, request } from "undici";
import { DEFAULT_BODY, Pattern, runStorm } from "../src/storm/index.js";
import { startPostgres, type TestPostgres } from "../test/helpers/postgres.js";
import { startRedis } from "../test/helpers/redis.js";

const CLI = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
const DURATION_MS = Number(process.env.BENCH_DURATION_MS ?? 2_000);
const WARMUP_MS = 500;
/** Each scenario runs alternately with its direct baseline this many times; the median ratio is reported. */
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 50);

interface Proc {
  url: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

async function spawnListening(command: string, args: string[], pattern: RegExp): Promise<Proc> {
  const proc = spawn(command, args, { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  const url = await new Promise<string>((resolve, reject) => {
    proc.stdout?.on("data", (c: Buffer) => {
      out += c.toString();
      const m = pattern.exec(out);
      if (m) resolve(m[1] as string);
    });
    proc.once("exit", (code) => reject(new Error(`${args.join(" ")} exited ${code}: ${out}`)));
  });
  return {
    url,
    proc,
    stop: async () => {
      if (proc.exitCode !== null) return;
      const exited = once(proc, "exit");
      proc.kill("SIGTERM");
      await exited;
    },
  };
}

const startBackend = (latency: string) =>
  spawnListening(
    process.execPath,
    [CLI, "demo-backend", "--port", "0", "--latency", latency],
    /listening on (\S+)/,
  );

async function startGateway(upstream: string, store: string, dir: string): Promise<Proc> {
  const file = join(dir, `gw-${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(
    file,
    `upstream: { url: "${upstream}" }\nstore: ${store}\nlog: { level: warn }\nadmin: { port: 0 }\n`,
  );
  return spawnListening(
    process.execPath,
    [CLI, "serve", "--config", file, "--port", "0"],
    /listening on (\S+)/,
  );
}

async function peakRssMb(pid: number | undefined): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return Math.round(kb / 1024);
}

interface LoadResult {
  /** Every request sent, warm-up included (what a store saw). */
  sent: number;
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  failed: number;
}

/** A closed loop: CONCURRENCY requests in flight, each followed at once by the next, for DURATION_MS. */
async function load(
  url: string,
  make: (i: number) => { method: "POST" | "GET"; headers: Record<string, string>; body?: string },
): Promise<LoadResult> {
  const target = new URL(url);
  const pool = new Pool(target.origin, { connections: CONCURRENCY });
  const histogram = hdr.build({ numberOfSignificantValueDigits: 3 });
  let seq = 0;
  let failed = 0;
  let measuring = false;
  let count = 0;
  const one = async () => {
    const { method, headers, body } = make(seq++);
    const started = performance.now();
    const res = await pool.request({
      method,
      path: target.pathname + target.search,
      headers,
      body: body ?? null,
    });
    await res.body.dump();
    if (!measuring) return;
    count++;
    if (res.statusCode >= 300) failed++;
    histogram.recordValue(Math.max(1, Math.round((performance.now() - started) * 1000)));
  };
  const until = async (deadline: number) => {
    while (performance.now() < deadline) await one();
  };
  const warm = performance.now() + WARMUP_MS;
  await Promise.all(Array.from({ length: CONCURRENCY }, () => until(warm)));
  measuring = true;
  const started = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, () => until(started + DURATION_MS)));
  const elapsed = performance.now() - started;
  await pool.close();
  const ms = (us: number) => Math.round(us / 10) / 100;
  return {
    sent: seq,
    rps: Math.round((count / elapsed) * 1000),
    p50: ms(histogram.getValueAtPercentile(50)),
    p90: ms(histogram.getValueAtPercentile(90)),
    p99: ms(histogram.getValueAtPercentile(99)),
    failed,
  };
}

const json = { "content-type": "application/json" };
const invoice = (i: number) => JSON.stringify({ invoiceNumber: `B-${i}`, transactionId: "T", amount: i });
const direct = (i: number) => ({ method: "POST" as const, headers: json, body: invoice(i) });
/**
 * A new key for every request of every round: a per-load counter would give later rounds the first
 * round's keys again, and they would be replays.
 */
let freshKeys = 0;
const fresh = (run: string) => (i: number) => ({
  method: "POST" as const,
  headers: { ...json, "idempotency-key": `${run}-${freshKeys++}` },
  body: invoice(i),
});
const replay = () => ({
  method: "POST" as const,
  headers: { ...json, "idempotency-key": "replay-1" },
  body: invoice(0),
});

interface Row {
  name: string;
  result: LoadResult;
  ratio?: number;
  target?: number;
  rss?: number;
  /** Store round trips per request (Redis scenarios): top-level script calls over requests sent. */
  roundTrips?: number;
}

type Make = Parameters<typeof load>[1];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

/**
 * The machine is shared with other services and has two cores for load generator, gateway,
 * backend and Redis; alternating scenario and baseline, and taking the median ratio of the rounds,
 * keeps a burst of outside load from deciding a figure.
 */
async function versus(
  baseUrl: string,
  url: string,
  make: Make,
): Promise<{ result: LoadResult; ratio: number; sent: number }> {
  const ratios: number[] = [];
  const results: LoadResult[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const base = await load(baseUrl, direct);
    const result = await load(url, make);
    ratios.push(result.rps / base.rps);
    results.push(result);
  }
  const ratio = median(ratios);
  const mid = results[ratios.indexOf(ratio)] as LoadResult;
  return { result: mid, ratio, sent: results.reduce((n, r) => n + r.sent, 0) };
}

/**
 * Top-level EVALSHA calls so far (every store operation of the gateway on Redis is one script call),
 * and the WAITs that store.redis.replicas adds.
 */
async function scriptCalls(redisUrl: string): Promise<number> {
  const client = new Redis(redisUrl);
  try {
    const stats = await client.info("commandstats");
    const calls = (command: string) =>
      Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
    return calls("evalsha") + calls("wait");
  } finally {
    client.disconnect();
  }
}

/** Waits (bounded) until the server at `redisUrl` has a replica in sync. */
async function replicaOnline(redisUrl: string): Promise<void> {
  const client = new Redis(redisUrl);
  try {
    for (let i = 0; i < 200; i++) {
      if (/slave0:.*state=online/.test(await client.info("replication"))) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error("the replica did not come online within 10 s");
  } finally {
    client.disconnect();
  }
}

/** A Redis scenario, with how many store round trips each of its requests cost. */
async function versusCounted(redisUrl: string, baseUrl: string, url: string, make: Make) {
  const before = await scriptCalls(redisUrl);
  const { sent, ...measured } = await versus(baseUrl, url, make);
  const calls = (await scriptCalls(redisUrl)) - before;
  return { ...measured, roundTrips: Math.round((calls / sent) * 100) / 100 };
}

function table(rows: Row[]): string {
  const lines = [
    [
      "scenario",
      "req/s",
      "p50 ms",
      "p90 ms",
      "p99 ms",
      "ratio",
      "target",
      "peak RSS",
      "non-2xx",
      "store RT/req",
    ],
  ];
  for (const r of rows) {
    const ratio = r.ratio;
    lines.push([
      r.name,
      String(r.result.rps),
      String(r.result.p50),
      String(r.result.p90),
      String(r.result.p99),
      ratio === undefined ? "1.00 (base)" : ratio.toFixed(2),
      r.target === undefined
        ? ""
        : `>= ${r.target.toFixed(2)} ${ratio !== undefined && ratio >= r.target ? "met" : "MISSED"}`,
      r.rss === undefined ? "" : `${r.rss} MB`,
      String(r.result.failed),
      r.roundTrips === undefined ? "" : r.roundTrips.toFixed(2),
    ]);
  }
  const widths = lines[0]?.map((_, c) => Math.max(...lines.map((l) => (l[c] ?? "").length))) ?? [];
  return lines.map((l) => l.map((cell, c) => cell.padEnd(widths[c] ?? 0)).join("  ")).join("\n");
}

/** A private redis-server (the test suite's, on a free port), stopped with the bench's other processes. */
async function privateRedis(args: string[] = []): Promise<{ url: string; stop(): Promise<void> }> {
  const redis = await startRedis({ own: true, args });
  return { url: redis.url, stop: () => redis.close() };
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "idem-bench-"));
  const procs: { stop(): Promise<void> }[] = [];
  const keep = <T extends { stop(): Promise<void> }>(p: T) => {
    procs.push(p);
    return p;
  };
  const rows: Row[] = [];
  const say = (text: string) => process.stderr.write(`${text}\n`);
  let postgres: TestPostgres | undefined;
  try {
    const redis = keep(await privateRedis());
    const memory = "{ kind: memory }";
    const shared = `{ kind: redis, redis: { url: "${redis.url}", prefix: "bench:" } }`;

    say("backend at 0 ms latency: direct, pass-through, first attempts and replays");
    const b0 = keep(await startBackend("0ms"));
    const gwMem = keep(await startGateway(b0.url, memory, dir));
    const gwRedis = keep(await startGateway(b0.url, shared, dir));
    const base0 = `${b0.url}/invoices`;
    rows.push({ name: "direct backend, 0 ms", result: await load(base0, direct) });
    rows.push({
      name: "pass-through",
      ...(await versus(base0, `${gwMem.url}/invoices`, direct)),
      target: 0.3,
    });
    rows.push({
      name: "first attempt, memory",
      ...(await versus(base0, `${gwMem.url}/invoices`, fresh("m"))),
    });
    rows.push({ name: "replay, memory", ...(await versus(base0, `${gwMem.url}/invoices`, replay)) });
    rows.push({
      name: "first attempt, redis",
      ...(await versusCounted(redis.url, base0, `${gwRedis.url}/invoices`, fresh("r"))),
      target: 0.2,
    });
    rows.push({
      name: "replay, redis",
      ...(await versusCounted(redis.url, base0, `${gwRedis.url}/invoices`, replay)),
      target: 0.32,
    });
    // store.redis.replicas: 1, against a replica of the same server: what the WAIT costs.
    const replicaOf = new URL(redis.url);
    keep(await privateRedis(["--replicaof", replicaOf.hostname, replicaOf.port]));
    await replicaOnline(redis.url);
    const durable = `{ kind: redis, redis: { url: "${redis.url}", prefix: "bench-r1:", replicas: 1 } }`;
    const gwDurable = keep(await startGateway(b0.url, durable, dir));
    rows.push({
      name: "first attempt, redis, replicas: 1",
      ...(await versusCounted(redis.url, base0, `${gwDurable.url}/invoices`, fresh("r1"))),
    });
    // The PostgreSQL store, on a private PostgreSQL (initdb, pg_ctl; or PG_URL).
    postgres = await startPostgres();
    const gwPg = keep(
      await startGateway(b0.url, `{ kind: postgres, postgres: { url: "${postgres.url}" } }`, dir),
    );
    rows.push({
      name: "first attempt, postgres",
      ...(await versus(base0, `${gwPg.url}/invoices`, fresh("p"))),
    });
    rows.push({ name: "replay, postgres", ...(await versus(base0, `${gwPg.url}/invoices`, replay)) });
    const rssMem = await peakRssMb(gwMem.proc.pid);
    const rssRedis = await peakRssMb(gwRedis.proc.pid);
    (rows[3] as Row).rss = rssMem;
    (rows[5] as Row).rss = rssRedis;

    say("backend at 20 ms latency: direct and first attempts");
    const b20 = keep(await startBackend("20ms"));
    const gw20Mem = keep(await startGateway(b20.url, memory, dir));
    const gw20Redis = keep(await startGateway(b20.url, shared, dir));
    const base20 = `${b20.url}/invoices`;
    rows.push({ name: "direct backend, 20 ms", result: await load(base20, direct) });
    rows.push({
      name: "first attempt, memory, 20 ms",
      ...(await versus(base20, `${gw20Mem.url}/invoices`, fresh("m20"))),
      target: 0.9,
    });
    rows.push({
      name: "first attempt, redis, 20 ms",
      ...(await versusCounted(redis.url, base20, `${gw20Redis.url}/invoices`, fresh("r20"))),
      target: 0.9,
    });

    say("storm: 500 keys x 20 concurrent copies on the 20 ms backend");
    const stormOf = (target: string, runId: string) =>
      runStorm({
        target: `${target}/invoices`,
        method: "POST",
        keys: 500,
        retries: 19,
        pattern: Pattern.Burst,
        concurrency: 50,
        connections: 1000,
        timeoutMs: 60_000,
        backoffMs: 100,
        maxDurationMs: 120_000,
        body: DEFAULT_BODY,
        headers: json,
        keyHeader: true,
        statsUrl: `${b20.url}/stats`,
        runId,
      });
    const stormDirect = await stormOf(b20.url, "sd");
    const stormMem = await stormOf(gw20Mem.url, "sm");
    const stormRedis = await stormOf(gw20Redis.url, "sr");

    say(
      "10,000 concurrent duplicates of one key waiting on a 10 s backend call, on a new gateway and on one that has forwarded",
    );
    const slow = keep(await startBackend("10s"));
    // Compiling undici's HTTP parser (WebAssembly) costs memory for a moment; the gateway does it
    // before it listens. Measured on a gateway that has forwarded nothing and on one that has, to
    // show that the first exchange no longer adds to the waiters' peak.
    const waitersOn = async (key: string, forwardedBefore: boolean) => {
      const gw = keep(await startGateway(slow.url, memory, dir));
      if (forwardedBefore) await (await request(`${gw.url}/stats`)).body.text();
      const before = (await (await request(`${slow.url}/stats`)).body.json()) as { executions: number };
      const agent = new Agent({ connections: 10_500 });
      const answers = await Promise.all(
        Array.from({ length: 10_000 }, () =>
          request(`${gw.url}/invoices`, {
            dispatcher: agent,
            method: "POST",
            headers: { ...json, "idempotency-key": key },
            body: invoice(1),
            signal: AbortSignal.timeout(60_000),
          }).then(
            async (r) => ({ status: r.statusCode, body: await r.body.text() }),
            (err: Error) => ({ status: 0, body: err.message }),
          ),
        ),
      );
      await agent.close();
      const rss = await peakRssMb(gw.proc.pid);
      const after = (await (await request(`${slow.url}/stats`)).body.json()) as { executions: number };
      await gw.stop();
      return { answers, rss, executions: after.executions - before.executions };
    };
    const waitNew = await waitersOn("waiters-new", false);
    const waitForwarded = await waitersOn("waiters-forwarded", true);
    process.stdout.write(
      `\nidempotency-gateway bench: ${CONCURRENCY} requests in flight; each scenario ${ROUNDS} x ${DURATION_MS} ms ` +
        "alternating with the direct backend; ratio = median of the rounds' ratios\n\n",
    );
    process.stdout.write(`${table(rows)}\n\n`);
    const stormLine = (name: string, r: typeof stormDirect) =>
      `  ${name.padEnd(22)} ${(r.durationMs / 1000).toFixed(2)} s, ${r.throughput} req/s, p99 ${r.latencyMs.p99} ms, ` +
      `executions ${r.backend?.executions}, duplicates ${r.backend?.duplicates}, differing answers ${r.consistency.inconsistent}`;
    process.stdout.write(
      "storm, 500 keys x 20 concurrent copies, 20 ms backend (target: gateway within 1.20x of direct)\n",
    );
    process.stdout.write(`${stormLine("direct", stormDirect)}\n`);
    process.stdout.write(
      `${stormLine("gateway, memory", stormMem)}  -> ${(stormMem.durationMs / stormDirect.durationMs).toFixed(2)}x\n`,
    );
    process.stdout.write(
      `${stormLine("gateway, redis", stormRedis)}  -> ${(stormRedis.durationMs / stormDirect.durationMs).toFixed(2)}x\n\n`,
    );
    const waitLine = (name: string, w: typeof waitNew) => {
      const ok = w.answers.filter((a) => a.status === 201);
      process.stdout.write(
        `  ${name.padEnd(22)} ${ok.length} answered 201, ${new Set(ok.map((a) => a.body)).size} distinct bodies, ` +
          `backend executions ${w.executions}, gateway peak RSS ${w.rss} MB\n`,
      );
      const other = w.answers.filter((a) => a.status !== 201);
      if (other.length)
        process.stdout.write(
          `    not 201: ${other.length}, e.g. ${other[0]?.status} ${other[0]?.body.slice(0, 120)}\n`,
        );
    };
    process.stdout.write(
      "10,000 waiting duplicates of one key, memory store, 10 s backend (target: peak RSS < 250 MB)\n",
    );
    waitLine("new gateway", waitNew);
    waitLine("after one forward", waitForwarded);
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    await postgres?.close();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${String(err)}\n`);
  process.exit(1);
});
