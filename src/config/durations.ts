import { mergeSettings } from "./routes.js";
import type { Config, RouteInput } from "./schema.js";

/** A lease shorter than this cannot outlive the store round trips it is extended by (every third). */
export const MIN_LOCK_TTL_MS = 100;
/** A stored answer kept for less than this is no protection against a retry. */
export const MIN_TTL_MS = 1_000;

type Field = "ttl" | "lockTtl" | "waitTimeout" | "reconcile.settle";

const UNITS: [string, number][] = [
  ["d", 86_400_000],
  ["h", 3_600_000],
  ["m", 60_000],
  ["s", 1_000],
];

/** 86400000 → "24h" rather than "86400000ms": errors speak as the config file does. */
function show(ms: number): string {
  for (const [unit, size] of UNITS) if (ms > 0 && ms % size === 0) return `${ms / size}${unit}`;
  return `${ms}ms`;
}

/**
 * Bounds of the durations that make the lease work, and the relations between them, checked on the
 * settings every route ends up with. Each problem names the field where it is set: the route's own,
 * or `defaults` when the route inherits it.
 */
export function durationProblems(config: Config): string[] {
  const problems = new Set<string>();
  const context = { upstreamTimeoutMs: config.upstream.timeout };
  if (config.upstream.timeout <= 0) problems.add("upstream.timeout: must be longer than 0");
  const scopes: { route: Partial<RouteInput>; prefix: string | undefined }[] = [
    { route: {}, prefix: undefined },
    ...config.routes
      .map((route, i) => ({ route, prefix: `routes[${i}]` }))
      .filter(({ route }) => route.protect),
  ];
  for (const { route, prefix } of scopes) {
    const s = mergeSettings(config.defaults, route, context);
    const own: Record<Field, boolean> = {
      ttl: route.ttl !== undefined,
      lockTtl: route.lockTtl !== undefined,
      waitTimeout: route.waitTimeout !== undefined,
      "reconcile.settle": route.reconcile !== undefined,
    };
    const at = (field: Field) => `${own[field] && prefix ? prefix : "defaults"}.${field}`;
    // A route that overrides none of a rule's fields has the defaults' problem, said once already.
    const mine = (...fields: Field[]) => prefix === undefined || fields.some((f) => own[f]);
    if (mine("lockTtl") && s.lockTtlMs < MIN_LOCK_TTL_MS) {
      problems.add(
        `${at("lockTtl")}: ${show(s.lockTtlMs)} is too short: a lease is extended every third of it and must outlive a store round trip (at least ${show(MIN_LOCK_TTL_MS)})`,
      );
    }
    if (mine("ttl") && s.ttlMs < MIN_TTL_MS) {
      problems.add(
        `${at("ttl")}: ${show(s.ttlMs)} is too short to protect a retry (at least ${show(MIN_TTL_MS)})`,
      );
    }
    if (mine("ttl", "lockTtl") && s.ttlMs < s.lockTtlMs) {
      problems.add(`${at("ttl")}: ${show(s.ttlMs)} is shorter than lockTtl ${show(s.lockTtlMs)}`);
    }
    if (mine("waitTimeout") && s.waitTimeoutMs <= 0) {
      problems.add(
        `${at("waitTimeout")}: must be longer than 0 (to answer duplicates 409 at once, set concurrent: reject)`,
      );
    }
    if (mine("ttl", "reconcile.settle") && s.ttlMs <= s.settleMs) {
      const settleAt = s.reconcile?.settle === undefined ? "upstream.timeout" : at("reconcile.settle");
      problems.add(
        `${at("ttl")}: ${show(s.ttlMs)} must be longer than the settle time (${settleAt}, ${show(s.settleMs)}): an unknown outcome must outlive the time in which its request may still commit`,
      );
    }
  }
  return [...problems];
}
