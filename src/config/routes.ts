import type { ErrorBodyShape } from "./error-body.js";
import type { Config, DefaultsInput, FingerprintPart, ReconcileRule, RouteInput } from "./schema.js";
import type { Source } from "./sources.js";

/**
 * Statuses that a status class in `cache` never covers: they say "not now" or "not you" rather than
 * giving an outcome (unauthenticated, forbidden, timeout, conflict, too early, rate limited), so a
 * retry must get a fresh attempt; and an answer to a caller without credentials must never be planted
 * for the real owner of a guessable key. Listing one of them as an exact code still caches it.
 */
export const NEVER_CACHED_BY_CLASS: ReadonlySet<number> = new Set([401, 403, 407, 408, 409, 425, 429]);

/** A route's settings after `defaults` are merged in: what the engine reads on every request. */
export interface RouteSettings {
  methods: ReadonlySet<string>;
  key: { header: string | false; required: boolean; from: readonly Source[] };
  scope: readonly Source[];
  /** Fields a request must carry besides its key (400 MISSING_FIELD). */
  require: readonly Source[];
  /** Header that carries the stored key upstream; false: none. */
  operationIdHeader: string | false;
  /** How long callers wait before they retry; undefined when the config does not say. */
  callerTimeoutMs: number | undefined;
  /** Headers whose values, hashed, make every key the caller's own. */
  identity: readonly Source[];
  fingerprint: readonly FingerprintPart[];
  ttlMs: number;
  lockTtlMs: number;
  concurrent: "wait" | "reject";
  waitTimeoutMs: number;
  cache: (status: number) => boolean;
  /** Upstream statuses (not cached) after which the key becomes unknown instead of being released. */
  unknownOn: (status: number) => boolean;
  maxBodySize: number;
  /** The largest answer stored; a larger one reaches its caller only, and the key becomes unknown. */
  maxResponseSize: number;
  onUnknown: "reject" | "retry" | "reconcile";
  /** Lower-case names of every header a key, scope, identity or fingerprint is read from. */
  readsHeaders: ReadonlySet<string>;
  /** The shape of the gateway's own error answers on this route. */
  errorBody: ErrorBodyShape;
  /** Present when onUnknown is reconcile (the config is refused otherwise). */
  reconcile: ReconcileRule | undefined;
  /**
   * How long a request that was sent may still commit on the backend after its attempt stopped
   * waiting for it: reconcile.settle, by default the upstream timeout.
   */
  settleMs: number;
}

export interface CompiledRoute {
  name: string;
  pattern: string;
  /** Methods the route matches; null matches any. */
  matchMethods: ReadonlySet<string> | null;
  protect: boolean;
  /** True for the implicit route of requests that match none: protected only with a key header. */
  fallback: boolean;
  settings: RouteSettings;
  regex: RegExp;
  paramNames: readonly string[];
}

export interface RouteMatch {
  route: CompiledRoute;
  params: Record<string, string>;
}

export const FALLBACK_ROUTE_NAME = "(default)";

/**
 * Whether a status is in a list of codes and classes ("2xx"); a class leaves out the `exceptions`,
 * which only an exact code names.
 */
export function statusPredicate(
  list: readonly (string | number)[],
  exceptions: ReadonlySet<number> = new Set(),
): (status: number) => boolean {
  const codes = new Set<number>();
  const classes = new Set<number>();
  for (const entry of list) {
    if (typeof entry === "number") codes.add(entry);
    else classes.add(Number(entry[0]));
  }
  return (status) => codes.has(status) || (classes.has(Math.floor(status / 100)) && !exceptions.has(status));
}

export function cachePredicate(list: readonly (string | number)[]): (status: number) => boolean {
  return statusPredicate(list, NEVER_CACHED_BY_CLASS);
}

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export interface PatternOptions {
  /** Letters must match in case; by default they need not. */
  caseSensitive?: boolean;
  /** "ignore" (default): `/invoices/` matches `/invoices` and the other way round. */
  trailingSlash?: "ignore" | "strict";
}

/**
 * `/callbacks/:robot` → /^\/callbacks\/([^/]+)\/?$/i with params ["robot"]; a final `*` matches the
 * rest. Case-insensitive and trailing-slash tolerant by default, because a backend that reads
 * `/Invoices/` as `/invoices` must not receive it unprotected.
 */
export function compilePattern(
  pattern: string,
  options: PatternOptions = {},
): { regex: RegExp; paramNames: string[] } {
  const paramNames: string[] = [];
  const ignoreSlash = options.trailingSlash !== "strict";
  const trimmed = ignoreSlash && pattern.length > 1 ? pattern.replace(/\/+$/, "") : pattern;
  const segments = trimmed.split("/").map((segment, i, all) => {
    if (segment.startsWith(":") && segment.length > 1) {
      paramNames.push(segment.slice(1));
      return "([^/]+)";
    }
    if (segment === "*" && i === all.length - 1) {
      paramNames.push("*");
      return "(.*)";
    }
    return escapeRegex(segment);
  });
  const last = paramNames.at(-1) === "*" || trimmed === "/";
  const tail = ignoreSlash && !last ? "\\/?" : "";
  return {
    regex: new RegExp(`^${segments.join("/")}${tail}$`, options.caseSensitive ? "" : "i"),
    paramNames,
  };
}

const DEFAULT_WAIT_TIMEOUT_MS = 25_000;
const CALLER_MARGIN_MS = 5_000;

/**
 * A waiting duplicate must be answered before its caller gives up, or the caller retries into
 * another wait and never hears: 5 s less than the caller's timeout, at most half of it less.
 */
export function defaultWaitTimeout(callerTimeoutMs: number | undefined): number {
  if (callerTimeoutMs === undefined) return DEFAULT_WAIT_TIMEOUT_MS;
  return callerTimeoutMs - Math.min(CALLER_MARGIN_MS, Math.floor(callerTimeoutMs / 2));
}

/** What route settings need to know of the rest of the config. */
export interface RouteContext {
  /** upstream.timeout in ms: the default settle time. */
  upstreamTimeoutMs: number;
}

/** The merged settings of one route (or of the defaults alone, for the fallback route). */
export function mergeSettings(
  defaults: DefaultsInput,
  route: Partial<RouteInput>,
  context: RouteContext,
): RouteSettings {
  const key = { ...defaults.key, ...route.key };
  const reconcile = route.reconcile ?? defaults.reconcile;
  const from = key.from ?? [];
  // On a route with a business key, a client's header is read only when the key block that gives
  // key.from names it too: robots that mint a key per attempt would otherwise make every retry a
  // new operation. A header named in defaults alone is for the routes keyed by a header.
  const header =
    from.length > 0
      ? (route.key?.header ?? (route.key?.from === undefined ? defaults.key.header : undefined) ?? false)
      : (key.header ?? "Idempotency-Key");
  const callerTimeoutMs = route.callerTimeout ?? defaults.callerTimeout;
  const scope = route.scope ?? defaults.scope;
  const identity = route.identity ?? defaults.identity;
  const fingerprint = route.fingerprint ?? defaults.fingerprint;
  const readsHeaders = new Set<string>(header === false ? [] : [header.toLowerCase()]);
  const require = route.require ?? defaults.require;
  for (const s of [...from, ...scope, ...identity, ...require, ...fingerprint]) {
    if (typeof s !== "string" && s.kind === "header") readsHeaders.add(s.name);
  }
  return {
    methods: new Set(route.methods ?? defaults.methods),
    key: { header, required: key.required ?? false, from },
    scope,
    require,
    operationIdHeader: route.operationIdHeader ?? defaults.operationIdHeader,
    callerTimeoutMs,
    identity,
    readsHeaders,
    fingerprint,
    ttlMs: route.ttl ?? defaults.ttl,
    lockTtlMs: route.lockTtl ?? defaults.lockTtl,
    concurrent: route.concurrent ?? defaults.concurrent,
    waitTimeoutMs: route.waitTimeout ?? defaults.waitTimeout ?? defaultWaitTimeout(callerTimeoutMs),
    cache: cachePredicate(route.cache ?? defaults.cache),
    unknownOn: statusPredicate(route.unknownOn ?? defaults.unknownOn),
    maxBodySize: route.maxBodySize ?? defaults.maxBodySize,
    maxResponseSize: route.maxResponseSize ?? defaults.maxResponseSize,
    onUnknown: route.onUnknown ?? defaults.onUnknown,
    reconcile,
    errorBody: route.errorBody ?? defaults.errorBody,
    settleMs: reconcile?.settle ?? context.upstreamTimeoutMs,
  };
}

function decodeParam(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

/** The compiled route table: built once at start, so requests never re-read config or build regexes. */
export class RouteTable {
  readonly routes: readonly CompiledRoute[];
  readonly fallback: CompiledRoute;
  /** What requests that match no route get: the fallback route, or 404. */
  readonly unmatched: "passthrough" | "reject";

  constructor(config: Pick<Config, "defaults" | "routes" | "upstream"> & Partial<Pick<Config, "unmatched">>) {
    this.unmatched = config.unmatched ?? "passthrough";
    const context = { upstreamTimeoutMs: config.upstream.timeout };
    this.routes = config.routes.map((r) => {
      const m = r.match.method;
      return {
        name: r.name,
        pattern: r.match.path,
        matchMethods: m === undefined ? null : new Set(Array.isArray(m) ? m : [m]),
        protect: r.protect,
        fallback: false,
        settings: mergeSettings(config.defaults, r, context),
        ...compilePattern(r.match.path, r.match),
      };
    });
    // Unmatched requests are protected only by a client key, never by derived fields.
    const fallbackSettings = mergeSettings(config.defaults, {}, context);
    fallbackSettings.key = { ...fallbackSettings.key, required: false, from: [] };
    this.fallback = {
      name: FALLBACK_ROUTE_NAME,
      pattern: "*",
      matchMethods: null,
      protect: true,
      fallback: true,
      settings: fallbackSettings,
      regex: /^/,
      paramNames: [],
    };
  }

  /** First match wins; a request that matches no route gets the fallback route. */
  match(method: string, path: string): RouteMatch {
    for (const route of this.routes) {
      if (route.matchMethods && !route.matchMethods.has(method)) continue;
      const m = route.regex.exec(path);
      if (!m) continue;
      const params: Record<string, string> = {};
      route.paramNames.forEach((name, i) => {
        params[name] = decodeParam(m[i + 1] ?? "");
      });
      return { route, params };
    }
    return { route: this.fallback, params: {} };
  }
}
