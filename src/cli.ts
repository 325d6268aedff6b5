#!/usr/bin/env node
import cluster from "node:cluster";
import { constants } from "node:fs";
import { access, readFile, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Command, InvalidArgumentError, Option } from "commander";
import {
  type CompiledRoute,
  type Config,
  configWarnings,
  type ErrorBodyShape,
  envOverrides,
  loadConfig,
  type Overrides,
  parseDuration,
  RouteTable,
} from "./config/index.js";
import { startDemoBackend } from "./demo/index.js";
import { ConfigError, GatewayError } from "./errors.js";
import {
  configuredCap,
  connectionCapWarning,
  createLogger,
  describeCap,
  logWritten,
  runPrimary,
  runWorker,
  startGateway,
  toProblem,
} from "./gateway/index.js";
import { type Explanation, explain } from "./idempotency/index.js";
import { DEFAULT_BODY, Pattern, type StormReport } from "./storm/types.js";

/** The config shipped with the package, used when --config is not given. */
export const EMBEDDED_CONFIG = fileURLToPath(new URL("../config/gateway.yaml", import.meta.url));

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new InvalidArgumentError("expected a port from 0 to 65535");
  return n;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("expected a whole number of at least 1");
  return n;
}

function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError("expected a whole number of at least 0");
  return n;
}

function httpUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError("expected a URL such as http://127.0.0.1:8080/invoices");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw new InvalidArgumentError("expected an http(s) URL");
  return value;
}

function rate(value: string): number {
  const n = Number(value);
  if (!(n >= 0 && n <= 1)) throw new InvalidArgumentError("expected a probability from 0 to 1");
  return n;
}

function duration(value: string): number {
  const ms = parseDuration(value);
  if (ms === undefined) throw new InvalidArgumentError("expected a duration such as 50ms or 31s");
  return ms;
}

/** "50ms" or a range "20ms-80ms". */
function latencyRange(value: string): [number, number] {
  const [lo, hi = lo] = value.split("-") as [string, string?];
  const range: [number, number] = [duration(lo), duration(hi as string)];
  if (range[0] > range[1]) throw new InvalidArgumentError("the range must go from low to high");
  return range;
}

function fail(message: string): never {
  process.stderr.write(`idempotency-gateway: ${message}\n`);
  process.exit(2);
}

async function load(file: string, flags: Overrides): Promise<Config> {
  const env = envOverrides();
  const merged: Overrides = {
    port: flags.port ?? env.port,
    upstream: flags.upstream ?? env.upstream,
    store: flags.store ?? env.store,
    redis: flags.redis ?? env.redis,
    redisPassword: env.redisPassword,
    auditPostgres: env.auditPostgres,
    storePostgres: env.storePostgres,
    adminPort: flags.adminPort ?? env.adminPort,
    adminToken: env.adminToken,
    logLevel: env.logLevel,
  };
  try {
    return await loadConfig(file, merged);
  } catch (err) {
    if (err instanceof ConfigError) {
      fail(`invalid config ${file}\n${err.problems.map((p) => `  ${p}`).join("\n")}`);
    }
    throw err;
  }
}

/** On SIGTERM or SIGINT (once): say so, let `close` drain, then exit 0 (1 if draining failed). */
function drainOnSignal(close: () => Promise<void>): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`${signal}: draining attempts under way, then exiting\n`);
    // The log's last lines are written in the background: give its reader a moment to take them.
    close().then(
      () => logWritten(2_000).then(() => process.exit(0)),
      (err) => {
        process.stderr.write(`idempotency-gateway: shutdown failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

/** The config's warnings and what this process's limits make of it. */
function startWarnings(config: Config): string[] {
  const cap = connectionCapWarning(configuredCap(config));
  return [...configWarnings(config), ...(cap ? [cap] : [])];
}

function workerCount(value: string): number {
  if (value === "auto") return availableParallelism();
  return positiveInt(value);
}

async function serveCommand(opts: { config: string; workers?: number } & Overrides): Promise<void> {
  const config = await load(opts.config, opts);
  if (cluster.isWorker) return runWorker(config);
  if (opts.workers !== undefined) {
    if (config.store.kind === "memory") {
      fail(
        "--workers needs store.kind: redis: workers would not share the memory store (use --store redis --redis URL)",
      );
    }
    for (const warning of startWarnings(config)) process.stderr.write(`warning: ${warning}\n`);
    const group = await runPrimary(config, opts.workers, createLogger(config.log));
    process.stdout.write(
      `idempotency-gateway listening on ${group.url} (upstream ${config.upstream.url}, store ${config.store.kind}, ` +
        `${opts.workers} workers${group.adminUrl ? `, admin ${group.adminUrl}` : ""})\n`,
    );
    drainOnSignal(() => group.close());
    return;
  }
  for (const warning of startWarnings(config)) process.stderr.write(`warning: ${warning}\n`);
  const gateway = await startGateway(config);
  process.stdout.write(
    `idempotency-gateway listening on ${gateway.url} (upstream ${config.upstream.url}, store ${config.store.kind}` +
      `${gateway.adminUrl ? `, admin ${gateway.adminUrl}` : ""})\n`,
  );
  drainOnSignal(() => gateway.close());
}

function routeLine(r: CompiledRoute): string {
  const methods = r.matchMethods ? [...r.matchMethods].join(",") : "*";
  if (!r.protect) return `  ${r.name}: ${methods} ${r.pattern} pass-through`;
  const s = r.settings;
  const key = [
    ...(s.key.header === false ? [] : [`header:${s.key.header}`]),
    ...s.key.from.map((f) => f.text),
  ];
  const fingerprint = s.fingerprint.map((p) => (typeof p === "string" ? p : p.text));
  return (
    `  ${r.name}: ${methods} ${r.pattern} protects ${[...s.methods].join(",")}; ` +
    `key ${key.join(" | ") || "(none)"}${s.key.required ? " (required)" : ""}; ` +
    `scope [${s.scope.map((x) => x.text).join(", ")}]; fingerprint [${fingerprint.join(", ")}]`
  );
}

function explanationLines(
  ex: Explanation,
  method: string,
  url: string,
  bodySize: number,
  shape: ErrorBodyShape,
): string[] {
  const at = ex.pattern === "*" ? "no route matched: defaults apply" : `route ${ex.route} (${ex.pattern})`;
  const lines = [`${method.toUpperCase()} ${url} -> ${at}, ${ex.protected ? "protected" : "pass-through"}`];
  const show = (v: unknown) => JSON.stringify(v);
  if (Object.keys(ex.params).length) lines.push(`  params: ${show(ex.params)}`);
  if (ex.error !== undefined) {
    const problem = toProblem(ex.error, { instance: url, shape });
    const { code, message } =
      ex.error instanceof GatewayError ? ex.error : { code: "INTERNAL", message: String(ex.error) };
    lines.push(`  answer: ${problem.status} ${code}: ${message}`, `  ${problem.body}`);
    return lines;
  }
  if (!ex.protected) return lines;
  if (!ex.key) {
    lines.push("  no key: forwarded unprotected (the key is optional on this route)");
    return lines;
  }
  lines.push(`  key (${ex.key.kind}):`, ...ex.key.sources.map((p) => `    ${p.source} = ${show(p.value)}`));
  if (ex.key.scope.length)
    lines.push("  scope:", ...ex.key.scope.map((p) => `    ${p.source} = ${show(p.value)}`));
  if (ex.key.identity) lines.push(`  identity: ${ex.key.identity} (hash of the identity headers)`);
  const part = (p: { part: string; value: unknown }) =>
    p.part === "body"
      ? `    body = ${bodySize} bytes, sha256 ${String(p.value)}`
      : `    ${p.part} = ${show(p.value)}`;
  lines.push("  fingerprint:", ...(ex.fingerprint ?? []).map(part));
  lines.push(`  stored key: ${ex.key.storeKey}`);
  return lines;
}

/** The error shape of the route an explanation names (the defaults' before any route is known). */
function shapeOf(table: RouteTable, routeName: string): ErrorBodyShape {
  return (table.routes.find((r) => r.name === routeName) ?? table.fallback).settings.errorBody;
}

function headerPair(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const colon = value.indexOf(":");
  if (colon <= 0) throw new InvalidArgumentError('expected "Name: value"');
  return { ...previous, [value.slice(0, colon).trim()]: value.slice(colon + 1).trim() };
}

interface CheckConfigFlags {
  config: string;
  connect?: boolean;
  explain?: string[];
  body?: string;
  header?: Record<string, string>;
}

async function checkConfigCommand(opts: CheckConfigFlags): Promise<void> {
  const config = await load(opts.config, {});
  const table = new RouteTable(config);
  const warnings = startWarnings(config).map((w) => `warning: ${w}`);
  if (opts.explain) {
    const [method, url, ...rest] = opts.explain;
    if (!method || !url || rest.length || !url.startsWith("/"))
      fail("--explain takes METHOD PATH, e.g. --explain POST /invoices");
    let body: Uint8Array = new Uint8Array();
    if (opts.body) {
      try {
        body = await readFile(opts.body);
      } catch (err) {
        fail(`--body ${opts.body}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
      }
    }
    const ex = explain(table, { method, url, headers: opts.header ?? {}, body });
    process.stdout.write(
      `${[...explanationLines(ex, method, url, body.byteLength, shapeOf(table, ex.route)), ...warnings].join("\n")}\n`,
    );
    return;
  }
  const lines = [`${opts.config}: ok (${table.routes.length} routes, store ${config.store.kind})`];
  lines.push(...table.routes.map(routeLine), describeCap(configuredCap(config)), ...warnings);
  process.stdout.write(`${lines.join("\n")}\n`);
  if (opts.connect) await checkStore(config);
}

/**
 * check-config --connect: reaches the store as serve would and says what its servers allow. One
 * line and exit 2 when it cannot be reached; exit 1 when it can but would refuse requests.
 */
async function checkStore(config: Config): Promise<void> {
  if (config.store.kind === "memory") {
    process.stdout.write("store: memory, inside the gateway process: nothing to connect to\n");
    return;
  }
  if (config.store.kind === "postgres") {
    const { PostgresStore } = await import("./store/postgres.js");
    const store = new PostgresStore({ url: config.store.postgres.url, migrate: false });
    try {
      const reachable = await store
        .ping()
        .then(() => true)
        .catch((err: Error) =>
          fail(`store: cannot reach postgres: ${(err.cause as Error | undefined)?.message ?? err.message}`),
        );
      const health = reachable ? await store.health() : { problems: [], warnings: [] };
      process.stdout.write(
        `${["store: postgres: reachable", ...health.problems.map((p) => `error: ${p}`)].join("\n")}\n`,
      );
      if (health.problems.length > 0) process.exitCode = 1;
    } finally {
      await store.close();
    }
    return;
  }
  const { RedisStore } = await import("./store/redis.js");
  const store = new RedisStore(config.store.redis);
  try {
    if (!(await store.connect(5_000, true))) {
      fail(`store: cannot reach redis (${store.where}): ${store.lastError ?? "no answer within 5 s"}`);
    }
    const health = await store.health();
    process.stdout.write(
      `${[
        `store: redis ${store.where}: reachable`,
        ...health.warnings.map((w) => `warning: ${w}`),
        ...health.problems.map((p) => `error: ${p}`),
      ].join("\n")}\n`,
    );
    if (health.problems.length > 0) process.exitCode = 1;
  } finally {
    await store.close();
  }
}

/** migrate: applies the CallbackLog's migrations to audit.postgres.url, and says which. */
async function migrateCommand(opts: { config: string }): Promise<void> {
  const config = await load(opts.config, {});
  const url = config.audit.postgres.url;
  if (!url) fail("migrate: no database: set audit.postgres.url or AUDIT_POSTGRES_URL");
  const { default: pg } = await import("pg");
  const { migrate } = await import("./audit/migrate.js");
  const pool = new pg.Pool({ connectionString: url, connectionTimeoutMillis: 5_000, max: 1 });
  pool.on("error", () => {});
  try {
    const applied = await migrate(pool);
    process.stdout.write(
      applied.length > 0 ? `applied: ${applied.join(", ")}\n` : "the database is up to date\n",
    );
  } catch (err) {
    fail(`migrate: ${(err as Error).message}`);
  } finally {
    await pool.end();
  }
}

interface DemoBackendFlags {
  host: string;
  port: number;
  latency: [number, number];
  failRate: number;
  failAfterCommit: number;
  failMode: "500" | "drop";
  stallRate: number;
  stall: number;
}

async function demoBackendCommand(opts: DemoBackendFlags): Promise<void> {
  const backend = await startDemoBackend({
    host: opts.host,
    port: opts.port,
    latencyMs: opts.latency,
    failRate: opts.failRate,
    failAfterCommit: opts.failAfterCommit,
    failMode: opts.failMode,
    stallRate: opts.stallRate,
    stallMs: opts.stall,
  });
  process.stdout.write(
    `demo invoice backend listening on ${backend.url} (not idempotent: every POST /invoices creates an invoice)\n`,
  );
  const stop = () => backend.close().then(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

interface StormFlags {
  target: string;
  compare?: string;
  method: string;
  keys: number;
  retries: number;
  pattern: Pattern;
  concurrency: number;
  connections: number;
  rate?: number;
  timeout: number;
  backoff: number;
  maxDuration: number;
  body: string;
  header?: Record<string, string>;
  keyHeader: boolean;
  statsUrl?: string;
  json?: string;
  html?: string;
}

async function stormCommand(opts: StormFlags): Promise<void> {
  const startedAt = new Date().toISOString();
  // Said before the storm, not after a run of minutes whose report has nowhere to go.
  for (const [flag, file] of [
    ["--json", opts.json],
    ["--html", opts.html],
  ] as const) {
    if (file === undefined) continue;
    await access(dirname(resolve(file)), constants.W_OK).catch((err: NodeJS.ErrnoException) => {
      throw new Error(`${flag} ${file}: cannot write there (${err.code ?? err.message})`);
    });
  }
  // Loaded only here: the load generator's histograms and progress bar are no part of a gateway.
  const [{ formatReports, runStorm }, { default: cliProgress }] = await Promise.all([
    import("./storm/index.js"),
    import("cli-progress"),
  ]);
  const targets = [opts.target, ...(opts.compare ? [opts.compare] : [])];
  // A live bar only for a person at a terminal: not in CI, not when output is piped.
  const live = process.stderr.isTTY === true && !process.env.CI;
  const reports: StormReport[] = [];
  for (const target of targets) {
    const bar = live
      ? new cliProgress.SingleBar(
          {
            format: `storm ${target} [{bar}] {value}/{total} operations {eta_formatted}`,
            stream: process.stderr,
          },
          cliProgress.Presets.shades_classic,
        )
      : undefined;
    bar?.start(opts.keys, 0);
    reports.push(
      await runStorm({
        target,
        method: opts.method.toUpperCase(),
        keys: opts.keys,
        retries: opts.retries,
        pattern: opts.pattern,
        concurrency: opts.concurrency,
        connections: opts.connections,
        rate: opts.rate,
        timeoutMs: opts.timeout,
        backoffMs: opts.backoff,
        maxDurationMs: opts.maxDuration,
        body: opts.body,
        headers: { "content-type": "application/json", "x-tenant-id": "storm", ...opts.header },
        keyHeader: opts.keyHeader,
        statsUrl: opts.statsUrl,
        detail: opts.html !== undefined,
        ...(bar ? { onProgress: (done: number) => bar.update(done) } : {}),
      }),
    );
    bar?.stop();
  }
  const labels = opts.compare ? ["target", "compare"] : ["storm"];
  process.stdout.write(`${formatReports(reports, labels)}\n`);
  // The JSON stays the summary it always was; the per-second and per-operation detail is the page's.
  const summaries = reports.map(({ detail: _, ...summary }) => summary);
  if (opts.json)
    await writeFile(opts.json, `${JSON.stringify(opts.compare ? summaries : summaries[0], null, 2)}\n`);
  if (opts.html) {
    // Loaded only here: the page inlines the charting library, which nothing else reads.
    const { stormHtml } = await import("./storm/html.js");
    const page = await stormHtml(
      reports.map((report, i) => ({ label: labels[i] as string, report })),
      { command: commandLine(), version: packageVersion(), at: startedAt },
    );
    await writeFile(opts.html, page);
    process.stdout.write(`report written to ${opts.html}\n`);
  }
}

/** This process's command line as a shell would take it back. */
function commandLine(): string {
  const quote = (arg: string) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`);
  return ["idempotency-gateway", ...process.argv.slice(2)].map(quote).join(" ");
}

function packageVersion(): string {
  const require = createRequire(import.meta.url);
  return (require("../package.json") as { version: string }).version;
}

interface InspectFlags {
  config: string;
  admin?: string;
  scope?: string[];
  identity?: string;
  headerKey: boolean;
  json: boolean;
}

/** The running gateway's admin API, as --admin or the config names it, and its token. */
async function adminOf(opts: { config: string; admin?: string | undefined }) {
  const config = await load(opts.config, {});
  if (!opts.admin && (config.admin.port === false || config.admin.port === 0)) {
    fail("this config has no fixed admin port: give the running gateway's admin URL with --admin");
  }
  const adminUrl = opts.admin ?? `http://${config.admin.host}:${config.admin.port}`;
  const token = envOverrides().adminToken ?? config.admin.token;
  return { config, adminUrl, token };
}

/** An admin API call: its JSON answer printed, one line and exit 1 (404) or 2 on a refusal. */
async function adminCall(
  adminUrl: string,
  token: string | undefined,
  path: string,
  body?: unknown,
): Promise<void> {
  let res: Response;
  try {
    res = await fetch(`${adminUrl}${path}`, {
      method: body === undefined ? "GET" : "POST",
      headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    fail(`cannot reach the admin API at ${adminUrl}: ${(err as Error).cause ?? (err as Error).message}`);
  }
  const answer = (await res.json()) as Record<string, unknown>;
  if (!res.ok) {
    process.stderr.write(`idempotency-gateway: ${String(answer.detail ?? answer.title ?? res.status)}\n`);
    process.exit(res.status === 404 ? 1 : 2);
  }
  process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
}

interface AttemptsFlags {
  config: string;
  admin?: string;
  route?: string;
  field?: Record<string, string>;
  outcome?: string;
  from?: string;
  to?: string;
  limit?: string;
}

/** attempts: the attempt log (the CallbackLog, with audit.sink: postgres) of a running gateway, filtered. */
async function attemptsCommand(opts: AttemptsFlags): Promise<void> {
  const { adminUrl, token } = await adminOf(opts);
  const query = new URLSearchParams();
  for (const [name, value] of [
    ["route", opts.route],
    ["outcome", opts.outcome],
    ["from", opts.from],
    ["to", opts.to],
    ["limit", opts.limit],
  ] as const) {
    if (value !== undefined) query.set(name, value);
  }
  for (const [name, value] of Object.entries(opts.field ?? {})) query.set(`field.${name}`, value);
  await adminCall(adminUrl, token, `/attempts?${query}`);
}

function fieldPair(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const at = value.indexOf("=");
  if (at <= 0) throw new InvalidArgumentError("expected NAME=VALUE, e.g. invoiceNumber=INV-4711");
  return { ...previous, [value.slice(0, at)]: value.slice(at + 1) };
}

/** Looks a key up through the admin API of a running gateway, as an operator knows the key. */
async function inspectCommand(route: string, keys: string[], opts: InspectFlags): Promise<void> {
  const { config, adminUrl, token } = await adminOf(opts);
  const compiled = new RouteTable(config).routes.find((r) => r.name === route);
  const value = (text: string): unknown => {
    if (!opts.json) return text;
    try {
      return JSON.parse(text);
    } catch {
      fail(`--json: ${text} is not a JSON value`);
    }
  };
  // A route this config does not know is left to the gateway, which knows how it keys requests.
  const byHeader = opts.headerKey || (compiled !== undefined && compiled.settings.key.from.length === 0);
  const body = {
    route,
    ...(byHeader ? { header: keys[0] } : { key: keys.map(value) }),
    scope: (opts.scope ?? []).map(value),
    ...(opts.identity ? { identity: opts.identity } : {}),
  };
  await adminCall(adminUrl, token, "/keys/lookup", body);
}

export function buildCli(): Command {
  const program = new Command("idempotency-gateway")
    .description("A reverse proxy that makes a non-idempotent HTTP backend safe to retry")
    .showHelpAfterError();

  program
    .command("serve")
    .description("run the gateway")
    .option("--config <file>", "YAML config", process.env.CONFIG || EMBEDDED_CONFIG)
    .option("--port <n>", "listen port (0 = any free port)", port)
    .option("--upstream <url>", "upstream base URL")
    .option("--store <kind>", "memory | redis")
    .option("--redis <url>", "Redis URL")
    .option("--admin-port <n>", "port of the admin API (0 = any free port)", port)
    .option(
      "--workers <n>",
      "worker processes sharing the port, or auto (one per core); needs the redis store",
      workerCount,
    )
    .action(serveCommand);

  program
    .command("check-config")
    .description("validate a config and print the compiled route table")
    .option("--config <file>", "YAML config", process.env.CONFIG || EMBEDDED_CONFIG)
    .option("--connect", "also connect to the store and check what its servers allow (persistence, eviction)")
    .option("--explain <request...>", "METHOD PATH: show what the gateway would do with this request")
    .option("--body <file>", "request body for --explain")
    .option("--header <line>", 'request header for --explain, "Name: value" (repeatable)', headerPair)
    .action(checkConfigCommand);

  program
    .command("migrate")
    .description("create or update the CallbackLog table in audit.postgres.url (AUDIT_POSTGRES_URL)")
    .option("--config <file>", "YAML config", process.env.CONFIG || EMBEDDED_CONFIG)
    .action(migrateCommand);

  program
    .command("demo-backend")
    .description("run a deliberately non-idempotent invoice API with fault injection")
    .option("--host <host>", "listen address", "127.0.0.1")
    .option("--port <n>", "listen port (0 = any free port)", port, 9000)
    .option("--latency <d>", "delay per POST, fixed (50ms) or a range (20ms-80ms)", latencyRange, [0, 0])
    .option("--fail-rate <p>", "answer 503 before committing", rate, 0)
    .option("--fail-after-commit <p>", "commit, then fail (see --fail-mode)", rate, 0)
    .option("--fail-mode <mode>", "how a post-commit failure looks: 500 | drop", "500")
    .option("--stall-rate <p>", "commit only after --stall", rate, 0)
    .option("--stall <d>", "how long a stalled request takes to commit", duration, 31_000)
    .action(demoBackendCommand);

  program
    .command("inspect")
    .description("look a key up in a running gateway's store: state, stored status, times, attempts")
    .argument("<route>", "route name, or (default) for requests that matched no route")
    .argument("<key...>", "the key as the caller sent it: the Idempotency-Key, or the key fields in order")
    .option(
      "--config <file>",
      "YAML config (for the admin address and token)",
      process.env.CONFIG || EMBEDDED_CONFIG,
    )
    .option("--admin <url>", "admin API of the running gateway (default: from the config)", httpUrl)
    .option("--scope <value>", "a scope value, in order (repeatable)", (v: string, prev: string[] = []) => [
      ...prev,
      v,
    ])
    .option(
      "--identity <hash>",
      "the caller's identity hash, as the attempt log shows it (keys are scoped by the caller)",
    )
    .option("--header-key", "the key is an Idempotency-Key even if the route derives keys", false)
    .option("--json", 'read each key and scope value as JSON (42 and "42" are different keys)', false)
    .action(inspectCommand);

  program
    .command("attempts")
    .description(
      "list a running gateway's attempt log, newest first (with audit.sink: postgres, the CallbackLog)",
    )
    .option(
      "--config <file>",
      "YAML config (for the admin address and token)",
      process.env.CONFIG || EMBEDDED_CONFIG,
    )
    .option("--admin <url>", "admin API of the running gateway (default: from the config)", httpUrl)
    .option("--route <name>", "only this route")
    .option(
      "--field <name=value>",
      "only rows whose key field has this value (repeatable; CallbackLog)",
      fieldPair,
    )
    .option("--outcome <outcome>", "only this outcome (executed, replayed, rejected, ...)")
    .option("--from <time>", "only rows at or after this ISO time or date (CallbackLog)")
    .option("--to <time>", "only rows at or before this ISO time or date (CallbackLog)")
    .option("--limit <n>", "at most this many rows (default 50, at most 1000)")
    .action(attemptsCommand);

  program
    .command("storm")
    .description("send a retry storm and count what the backend executed")
    .requiredOption(
      "--target <url>",
      "URL to storm, path included (e.g. http://127.0.0.1:8080/invoices)",
      httpUrl,
    )
    .option("--compare <url>", "run the same storm against a second URL (e.g. the backend directly)", httpUrl)
    .option("--method <m>", "HTTP method", "POST")
    .option("--keys <n>", "logical operations", positiveInt, 100)
    .option("--retries <n>", "retries per operation (each is sent up to n + 1 times)", nonNegativeInt, 4)
    .addOption(
      new Option("--pattern <p>", "how retries are sent")
        .choices(Object.values(Pattern))
        .default(Pattern.Burst),
    )
    .option("--concurrency <n>", "operations in flight at once", positiveInt, 50)
    .option("--connections <n>", "connections to the target at most", positiveInt, 256)
    .option("--rate <n>", "requests per second at most", positiveInt)
    .option("--timeout <d>", "client timeout of one request", duration, 30_000)
    .option("--backoff <d>", "base delay of the backoff pattern", duration, 100)
    .option("--max-duration <d>", "stop after this long whatever is left", duration, 120_000)
    .option("--body <template>", "body template with {key}, {i} and {run}", DEFAULT_BODY)
    .option("--header <line>", 'request header "Name: value", placeholders allowed (repeatable)', headerPair)
    .option(
      "--key-header",
      "send Idempotency-Key: {key} (default: the gateway derives keys from the body)",
      false,
    )
    .option("--stats-url <url>", "backend /stats to read before and after (duplicates created)", httpUrl)
    .option("--json <file>", "write the report(s) as JSON")
    .option("--html <file>", "write a self-contained HTML report with charts (opens from disk, no network)")
    .action(stormCommand);

  return program;
}

buildCli()
  .parseAsync()
  .catch((err: unknown) => fail(err instanceof Error ? err.message : String(err)));
