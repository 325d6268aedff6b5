import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { parseDocument } from "yaml";
import type { z } from "zod";
import { ConfigError } from "../errors.js";
import { durationProblems } from "./durations.js";
import { type Config, configSchema } from "./schema.js";

/** Values that win over the file: command-line flags first, then the environment. */
export interface Overrides {
  port?: number | undefined;
  upstream?: string | undefined;
  store?: string | undefined;
  redis?: string | undefined;
  redisPassword?: string | undefined;
  auditPostgres?: string | undefined;
  storePostgres?: string | undefined;
  adminPort?: number | undefined;
  adminToken?: string | undefined;
  logLevel?: string | undefined;
}

/** `routes[1].key.from[0]` from `["routes", 1, "key", "from", 0]`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const part of path) out += typeof part === "number" ? `[${part}]` : `${out ? "." : ""}${String(part)}`;
  return out || "(top level)";
}

function formatIssues(error: z.ZodError): string[] {
  return error.issues.map((issue) => `${formatPath(issue.path)}: ${issue.message}`);
}

export function envOverrides(env: NodeJS.ProcessEnv = process.env): Overrides {
  const number = (v: string | undefined) => (v === undefined || v === "" ? undefined : Number(v));
  return {
    port: number(env.PORT),
    upstream: env.UPSTREAM_URL || undefined,
    store: env.STORE || undefined,
    redis: env.REDIS_URL || undefined,
    redisPassword: env.REDIS_PASSWORD || undefined,
    auditPostgres: env.AUDIT_POSTGRES_URL || undefined,
    storePostgres: env.STORE_POSTGRES_URL || undefined,
    adminPort: number(env.ADMIN_PORT),
    adminToken: env.ADMIN_TOKEN || undefined,
    logLevel: env.LOG_LEVEL || undefined,
  };
}

type Raw = Record<string, unknown>;
function child(obj: Raw, key: string): Raw {
  const value = obj[key];
  if (value !== null && typeof value === "object" && !Array.isArray(value)) return value as Raw;
  const fresh: Raw = {};
  obj[key] = fresh;
  return fresh;
}

function applyOverrides(raw: Raw, o: Overrides): void {
  if (o.port !== undefined) child(raw, "listen").port = o.port;
  if (o.upstream !== undefined) child(raw, "upstream").url = o.upstream;
  if (o.store !== undefined) child(raw, "store").kind = o.store;
  if (o.redis !== undefined) child(child(raw, "store"), "redis").url = o.redis;
  if (o.redisPassword !== undefined) child(child(raw, "store"), "redis").password = o.redisPassword;
  if (o.auditPostgres !== undefined) child(child(raw, "audit"), "postgres").url = o.auditPostgres;
  if (o.storePostgres !== undefined) child(child(raw, "store"), "postgres").url = o.storePostgres;
  if (o.adminPort !== undefined) child(raw, "admin").port = o.adminPort;
  if (o.adminToken !== undefined) child(raw, "admin").token = o.adminToken;
  if (o.logLevel !== undefined) child(raw, "log").level = o.logLevel;
}

/** Validates an already-parsed document; throws ConfigError listing every problem by path. */
export function parseConfig(raw: unknown, overrides: Overrides = {}): Config {
  const doc: Raw = raw === null || raw === undefined ? {} : (raw as Raw);
  if (typeof doc !== "object" || Array.isArray(doc))
    throw new ConfigError(["(top level): expected a mapping"]);
  applyOverrides(doc, overrides);
  const result = configSchema.safeParse(doc);
  if (!result.success) throw new ConfigError(formatIssues(result.error));
  const names = new Set<string>();
  const problems: string[] = [];
  const { defaults } = result.data;
  if (defaults.onUnknown === "reconcile" && !defaults.reconcile) {
    problems.push("defaults.reconcile: required when onUnknown is reconcile (the probe to ask the backend)");
  }
  result.data.routes.forEach((route, i) => {
    if (names.has(route.name)) problems.push(`routes[${i}].name: duplicate route name "${route.name}"`);
    names.add(route.name);
    const onUnknown = route.onUnknown ?? defaults.onUnknown;
    if (route.protect && onUnknown === "reconcile" && !(route.reconcile ?? defaults.reconcile)) {
      problems.push(
        `routes[${i}].reconcile: required when onUnknown is reconcile (the probe to ask the backend)`,
      );
    }
  });
  problems.push(...durationProblems(result.data));
  const { admin } = result.data;
  if (admin.port !== false && !admin.token && !isLoopback(admin.host)) {
    problems.push(
      `admin.token: required when the admin API listens on "${admin.host}", which is not loopback (or set ADMIN_TOKEN)`,
    );
  }
  if (problems.length) throw new ConfigError(problems);
  return result.data;
}

export function parseConfigText(text: string, source: string, overrides: Overrides = {}): Config {
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length) {
    throw new ConfigError(doc.errors.map((e) => `${source}: ${e.message.split("\n")[0]}`));
  }
  return parseConfig(doc.toJS(), overrides);
}

export async function loadConfig(file: string, overrides: Overrides = {}): Promise<Config> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new ConfigError([`${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`]);
  }
  return parseConfigText(text, file, overrides);
}

/**
 * IP literals only: a name such as "127.attacker.example" or even "localhost" resolves to whatever
 * the resolver says, so it proves nothing about where the listener ends up.
 */
function isLoopback(host: string): boolean {
  if (isIP(host) === 4) return host.startsWith("127.");
  return isIP(host) === 6 && /^(0*:)*:?0*1$/.test(host);
}
