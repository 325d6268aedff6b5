#!/usr/bin/env node
import { fileURLToPath } from "node:url";
import { Command, InvalidArgumentError } from "commander";
import {
  type Config,
  envOverrides,
  loadConfig,
  type Overrides,
  parseDuration,
  RouteTable,
} from "./config/index.js";
import { startDemoBackend } from "./demo/index.js";
import { ConfigError } from "./errors.js";
import { startGateway } from "./gateway/index.js";

/** The config shipped with the package, used when --config is not given. */
export const EMBEDDED_CONFIG = fileURLToPath(new URL("../config/gateway.yaml", import.meta.url));

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new InvalidArgumentError("expected a port from 0 to 65535");
  return n;
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

async function serveCommand(opts: { config: string } & Overrides): Promise<void> {
  const config = await load(opts.config, opts);
  const gateway = await startGateway(config);
  process.stdout.write(
    `idempotency-gateway listening on ${gateway.url} (upstream ${config.upstream.url}, store ${config.store.kind})\n`,
  );
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`${signal}: draining attempts under way, then exiting\n`);
    gateway.close().then(
      () => process.exit(0),
      (err) => {
        process.stderr.write(`idempotency-gateway: shutdown failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

async function checkConfigCommand(opts: { config: string }): Promise<void> {
  const config = await load(opts.config, {});
  const table = new RouteTable(config);
  const lines = [`${opts.config}: ok (${table.routes.length} routes, store ${config.store.kind})`];
  for (const r of table.routes) {
    const methods = r.matchMethods ? [...r.matchMethods].join(",") : "*";
    const s = r.settings;
    const key = s.key.header === false ? [] : [`header:${s.key.header}`];
    const from = s.key.from.map((f) => f.text);
    lines.push(
      r.protect
        ? `  ${r.name}: ${methods} ${r.pattern} key=${[...key, ...from].join(" | ") || "(none)"}${s.key.required ? " (required)" : ""} scope=[${s.scope.map((x) => x.text).join(", ")}]`
        : `  ${r.name}: ${methods} ${r.pattern} pass-through`,
    );
  }
  process.stdout.write(`${lines.join("\n")}\n`);
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
    .action(serveCommand);

  program
    .command("check-config")
    .description("validate a config and print the compiled route table")
    .option("--config <file>", "YAML config", process.env.CONFIG || EMBEDDED_CONFIG)
    .action(checkConfigCommand);

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

  return program;
}

buildCli()
  .parseAsync()
  .catch((err: unknown) => fail(err instanceof Error ? err.message : String(err)));
