import { mergeSettings, type RouteSettings } from "./routes.js";
import type { Config } from "./schema.js";
import type { Source } from "./sources.js";

/** Headers a client cannot set for another caller: its own credentials. */
const CREDENTIALS = new Set(["authorization", "cookie"]);

/**
 * Whether a route's keys are the caller's own: scoped by an identity, or by a scope header that only a
 * trusted proxy sets. Anything else lets one caller read or pre-empt another's answers.
 */
function isolationWarnings(
  where: string,
  identity: readonly Source[],
  scope: readonly Source[],
  from: readonly Source[],
  trusted: ReadonlySet<string>,
): string[] {
  const out: string[] = [];
  const byTrusted = (s: Source) => s.kind === "header" && (CREDENTIALS.has(s.name) || trusted.has(s.name));
  for (const s of identity) {
    if (!byTrusted(s)) {
      out.push(
        `${where}.identity: ${s.text} is set by the client, so any caller can claim another's identity; ` +
          "list it in trustProxy.headers when a trusted proxy sets it",
      );
    }
  }
  if (identity.length === 0 && !scope.some(byTrusted)) {
    const keys =
      from.length > 0 ? `the same ${from.map((s) => s.text).join(", ")}` : "the same Idempotency-Key";
    out.push(
      `${where}: keys are not scoped by the caller's identity (identity is empty${
        scope.length > 0 ? " and the scope is set by the client" : ""
      }): callers sending ${keys} share one stored answer; use identity: [header:Authorization] or a scope header from trustProxy.headers`,
    );
  }
  return out;
}

const seconds = (ms: number) => `${ms / 1000}s`;

/**
 * Whether a route's timeouts fit the callerTimeout it declares: a caller that gives up before the
 * gateway answers retries into the same wait, or into a 409, and never hears the outcome.
 */
function callerTimeoutWarnings(where: string, s: RouteSettings, upstreamTimeoutMs: number): string[] {
  const caller = s.callerTimeoutMs;
  if (caller === undefined) return [];
  const out: string[] = [];
  if (s.concurrent === "wait" && s.waitTimeoutMs >= caller) {
    out.push(
      `${where}.waitTimeout: ${seconds(s.waitTimeoutMs)} is not below callerTimeout ${seconds(caller)}: ` +
        "a waiting retry is answered after its caller gave up; leave a few seconds",
    );
  }
  if (s.concurrent === "reject") {
    out.push(
      `${where}.concurrent: reject answers a retry 409 at once while the first attempt runs: callers that ` +
        `retry at once (callerTimeout ${seconds(caller)}) use their retries up; use concurrent: wait`,
    );
  }
  if (upstreamTimeoutMs <= caller) {
    out.push(
      `upstream.timeout: ${seconds(upstreamTimeoutMs)} is not longer than ${where}.callerTimeout ${seconds(caller)}: ` +
        "the gateway gives up on a slow backend before its caller does, and the operation becomes unknown " +
        "instead of being stored for the retry",
    );
  }
  return out;
}

/** The statuses a backend may answer after it committed; released, a retry executes again. */
const AMBIGUOUS_STATUSES = [500, 502, 504];

function releasedAmbiguousStatuses(where: string, s: RouteSettings): string[] {
  const released = AMBIGUOUS_STATUSES.filter((status) => !s.cache(status) && !s.unknownOn(status));
  if (released.length === 0) return [];
  return [
    `${where}.unknownOn: leaves out ${released.join(", ")}: a backend that commits and then answers ` +
      `${released.length === 1 ? "it" : "one of them"} gets a duplicate from every retry`,
  ];
}

/**
 * Settings that are legal but risky, said once at start (Caddy's Provision() habit) and by
 * check-config. Each names where it is in the file.
 */
export function configWarnings(config: Config): string[] {
  const out: string[] = [];
  if (config.store.failMode === "open") {
    out.push(
      "store.failMode: open: while the store is unreachable, requests are forwarded unprotected (duplicates possible)",
    );
  }
  const redis = config.store.redis;
  if (config.store.kind === "redis" && (redis.cluster || redis.sentinel) && redis.replicas === 0) {
    out.push(
      "store.redis.replicas is 0: a failover can lose a begin or an answer the primary had not yet " +
        "replicated, and its retry executes again; set store.redis.replicas: 1",
    );
  }
  if (config.defaults.onUnknown === "retry") {
    out.push(
      "defaults.onUnknown: retry: a retry after an unknown outcome is forwarded again (at-least-once)",
    );
  }
  const trusted = new Set(config.trustProxy.headers.map((h) => h.toLowerCase()));
  if (trusted.size > 0 && config.trustProxy.addresses.length === 0) {
    out.push(
      "trustProxy.headers: no trustProxy.addresses are given, so every request carrying one of these headers is refused",
    );
  }
  out.push(...isolationWarnings("defaults", config.defaults.identity, config.defaults.scope, [], trusted));
  const context = { upstreamTimeoutMs: config.upstream.timeout };
  const defaultSettings = mergeSettings(config.defaults, {}, context);
  out.push(...callerTimeoutWarnings("defaults", defaultSettings, config.upstream.timeout));
  out.push(...releasedAmbiguousStatuses("defaults", defaultSettings));

  config.routes.forEach((route, i) => {
    const where = `routes[${i}] "${route.name}"`;
    if (!route.protect) return;
    const from = route.key?.from ?? config.defaults.key.from ?? [];
    const identity = route.identity ?? config.defaults.identity;
    const scope = route.scope ?? config.defaults.scope;
    if (route.identity || route.scope || from.length > 0) {
      out.push(...isolationWarnings(where, identity, scope, from, trusted));
    }
    const settings = mergeSettings(config.defaults, route, context);
    if (route.callerTimeout !== undefined || route.waitTimeout !== undefined || route.concurrent) {
      out.push(...callerTimeoutWarnings(where, settings, config.upstream.timeout));
    }
    if (route.unknownOn !== undefined || route.cache !== undefined) {
      out.push(...releasedAmbiguousStatuses(where, settings));
    }
    if (route.onUnknown === "retry") {
      out.push(
        `${where}.onUnknown: retry: a retry after an unknown outcome is forwarded again (at-least-once)`,
      );
    }
    const header = route.key?.header ?? config.defaults.key.header;
    if (header === false && from.length === 0) {
      out.push(`${where}: key.header is false and there is no key.from: no request can get a key`);
    }
    const reconcile = route.reconcile ?? config.defaults.reconcile;
    if ((route.onUnknown ?? config.defaults.onUnknown) === "reconcile" && reconcile) {
      // The probe's verdict is status-only: a probe that names part of the key "finds" any operation
      // sharing that part (another transaction's invoice), and its answer is stored as this one's.
      const named = new Set(
        reconcile.probe.path.template.flatMap((p) => (typeof p === "string" ? [] : [p.text])),
      );
      const keyFields = from.length > 0 ? from.map((s) => s.text) : [`header:${header || "Idempotency-Key"}`];
      const missing = keyFields.filter((f) => !named.has(f) && !named.has(f.toLowerCase()));
      if (missing.length > 0) {
        out.push(
          `${where}.reconcile.probe.path: does not name ${missing.join(", ")}: the probe must name every key field, ` +
            "or a found answer may belong to another operation and be replayed as this one's",
        );
      }
    }
  });
  return out;
}
