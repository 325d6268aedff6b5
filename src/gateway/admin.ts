import { timingSafeEqual } from "node:crypto";
import type { Server, Socket } from "node:net";
import { type ServerType, serve } from "@hono/node-server";
import { Hono, type MiddlewareHandler } from "hono";
import type { Logger } from "pino";
import { z } from "zod";
import type { PostgresCallbackLog } from "../audit/callback-log.js";
import { type CompiledRoute, FALLBACK_ROUTE_NAME, formatPath, type RouteTable } from "../config/index.js";
import { storeKeyFor } from "../idempotency/index.js";
import { type IdempotencyStore, RecordState, type StoredRecord } from "../store/index.js";
import { answerClientError } from "./client-error.js";
import { listening } from "./listen.js";
import { PROBLEM_TYPE_PREFIX } from "./problem.js";

export interface AdminDeps {
  store: IdempotencyStore;
  routes: RouteTable;
  /** Where /metrics text comes from: this process's registry, or the workers' aggregated by the primary. */
  metrics: { metrics(): Promise<string>; readonly contentType: string };
  /** Bearer token; without one the API is open, which config validation allows on loopback only. */
  token: string | undefined;
  /** Requests forwarded unprotected because the store was unreachable (failMode: open). */
  unprotectedForwards(): number;
  /** Whether the upstream accepts connections. */
  upstreamReachable(): Promise<{ reachable: boolean; error?: string }>;
  /** The CallbackLog, when audit.sink is postgres: attempts are read from it. */
  callbackLog?: PostgresCallbackLog | undefined;
  /** Where requests refused before they could be read are logged. */
  logger: Logger;
}

function problem(
  status: number,
  code: string,
  title: string,
  detail: string,
  headers: Record<string, string> = {},
): Response {
  const type = PROBLEM_TYPE_PREFIX + code.toLowerCase().replaceAll("_", "-");
  return new Response(JSON.stringify({ type, title, status, detail, code }), {
    status,
    headers: { "content-type": "application/problem+json", ...headers },
  });
}

function unauthorized(detail: string): Response {
  return problem(401, "UNAUTHORIZED", "Unauthorized", detail, { "www-authenticate": 'Bearer realm="admin"' });
}

/** Bearer-token check in constant time, so the token cannot be guessed byte by byte from timings. */
function bearer(token: string | undefined): MiddlewareHandler {
  const expected = token === undefined ? undefined : Buffer.from(token);
  return async function adminAuth(c, next) {
    if (!expected) return next();
    const header = c.req.header("authorization") ?? "";
    if (!header.startsWith("Bearer ")) return unauthorized("send Authorization: Bearer <admin token>");
    const given = Buffer.from(header.slice(7));
    if (given.length !== expected.length || !timingSafeEqual(given, expected))
      return unauthorized("wrong admin token");
    return next();
  };
}

function writesNeedToken(token: string | undefined): MiddlewareHandler {
  return async function adminWrites(_c, next) {
    if (token) return next();
    return problem(
      403,
      "ADMIN_TOKEN_REQUIRED",
      "Admin token required",
      "purge and resolve change what callers get back: set admin.token (or ADMIN_TOKEN) to use them",
    );
  };
}

/** A key as the operator knows it: the route, and either the client's header key or the business fields. */
const keyRef = z
  .strictObject({
    route: z.string().min(1),
    header: z.string().min(1).optional(),
    key: z.array(z.unknown()).min(1).optional(),
    scope: z.array(z.unknown()).default([]),
    identity: z
      .string()
      .regex(/^[A-Za-z0-9_-]{43}$/, "the caller's identity hash, as the attempt log shows it")
      .optional(),
  })
  .refine((v) => (v.header === undefined) !== (v.key === undefined), {
    message: 'give either "header" (the Idempotency-Key value) or "key" (the key fields, in order)',
  });
type KeyRef = z.output<typeof keyRef>;

const resolveBody = z.intersection(
  keyRef,
  z.object({
    action: z.enum(["store", "release"]),
    response: z
      .strictObject({
        status: z.number().int().min(100).max(599),
        headers: z
          .array(
            z.tuple([
              z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "not a header name"),
              // CR or LF in a stored header would split the replayed response.
              z.string().regex(/^[^\r\n\0]*$/, "a header value may not hold CR, LF or NUL"),
            ]),
          )
          .default([]),
        body: z.string().default(""),
        encoding: z.enum(["utf8", "base64"]).default("utf8"),
      })
      .optional(),
  }),
);

function describeRecord(route: string, storeKey: string, record: StoredRecord) {
  return {
    route,
    storeKey,
    state: record.state,
    createdAt: new Date(record.createdAt).toISOString(),
    expiresAt: new Date(record.expiresAt).toISOString(),
    attempts: record.attempts ?? 0,
    // An operator resolving an unknown key by hand needs to know whether the backend may still commit it.
    ...(record.state === RecordState.Unknown ? { settlesInMs: record.settlesInMs } : {}),
    ...(record.state === RecordState.Completed
      ? {
          response: {
            status: record.response.status,
            headers: record.response.headers,
            bodyBytes: record.response.body.byteLength,
            ...(record.response.reconciled ? { reconciled: true } : {}),
          },
        }
      : {}),
  };
}

/** Parses a JSON body with a schema; a bad one is a 400 that names the field. */
async function parse<S extends z.ZodType>(req: Request, schema: S): Promise<z.output<S> | Response> {
  let raw: unknown;
  try {
    raw = await req.json();
  } catch {
    return problem(400, "INVALID_ADMIN_REQUEST", "Invalid admin request", "the body is not JSON");
  }
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const first = result.error.issues[0];
  const detail = first ? `${formatPath(first.path)}: ${first.message}` : "invalid";
  return problem(400, "INVALID_ADMIN_REQUEST", "Invalid admin request", detail);
}

/**
 * Whether the store answers, and what it refuses or risks: a Redis at maxmemory or turned replica
 * answers PING, so a ping alone would keep /readyz green while every protected request fails.
 */
async function storeReadiness(store: IdempotencyStore) {
  try {
    await store.ping();
  } catch (err) {
    return { kind: store.kind, reachable: false, error: (err as Error).message, problems: [], warnings: [] };
  }
  const health = (await store.health?.().catch(() => undefined)) ?? { problems: [], warnings: [] };
  return { kind: store.kind, reachable: true, ...health };
}

/** The operator's listener, apart from the proxied traffic. Health endpoints are open; the rest needs the token. */
export function createAdminApp(deps: AdminDeps): Hono {
  const app = new Hono();
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/readyz", async (c) => {
    const [store, upstream] = await Promise.all([storeReadiness(deps.store), deps.upstreamReachable()]);
    const storeOk = store.reachable && store.problems.length === 0;
    const ready = storeOk && upstream.reachable;
    const audit = deps.callbackLog?.health();
    // A CallbackLog that spools or lost rows does not stop requests: still 200, but said.
    const status = ready
      ? audit?.degraded
        ? "degraded"
        : "ready"
      : !store.reachable
        ? "store unreachable"
        : !storeOk
          ? "store refusing"
          : "upstream unreachable";
    return c.json(
      {
        status,
        store,
        upstream,
        ...(audit ? { audit } : {}),
        unprotectedForwards: deps.unprotectedForwards(),
      },
      ready ? 200 : 503,
    );
  });
  app.use("*", bearer(deps.token));
  // Reads on loopback may be open; writes change what callers get back, so they always need the token.
  app.use("/keys/purge", writesNeedToken(deps.token));
  app.use("/keys/resolve", writesNeedToken(deps.token));
  app.get("/metrics", async (c) =>
    c.body(await deps.metrics.metrics(), 200, { "content-type": deps.metrics.contentType }),
  );

  const routeNamed = (name: string): CompiledRoute | undefined =>
    name === FALLBACK_ROUTE_NAME ? deps.routes.fallback : deps.routes.routes.find((r) => r.name === name);

  function locate(ref: KeyRef): { route: CompiledRoute; storeKey: string } | Response {
    const route = routeNamed(ref.route);
    if (!route)
      return problem(404, "NO_SUCH_ROUTE", "No such route", `there is no route named "${ref.route}"`);
    // Key values given for a route keyed by its header are that header's value.
    const header = ref.header ?? (route.settings.key.from.length === 0 ? ref.key?.[0] : undefined);
    const storeKey =
      header !== undefined
        ? storeKeyFor(route.name, ref.scope, "header", [header], ref.identity)
        : storeKeyFor(route.name, ref.scope, "derived", ref.key ?? [], ref.identity);
    return { route, storeKey };
  }

  app.post("/keys/lookup", async (c) => {
    const ref = await parse(c.req.raw, keyRef);
    if (ref instanceof Response) return ref;
    const at = locate(ref);
    if (at instanceof Response) return at;
    const [record, recent] = await Promise.all([
      deps.store.get(at.storeKey),
      deps.callbackLog
        ? deps.callbackLog.query({ storeKey: at.storeKey, limit: 20 })
        : deps.store.recentAttempts({ storeKey: at.storeKey, limit: 20 }),
    ]);
    if (!record) {
      // The record may be gone (its ttl ended) while the CallbackLog still tells what happened.
      if (recent.length > 0) {
        return c.json({ route: at.route.name, storeKey: at.storeKey, state: "gone", recentAttempts: recent });
      }
      return problem(
        404,
        "NO_SUCH_KEY",
        "No such key",
        "no record for this key (never seen, expired or purged)",
      );
    }
    return c.json({ ...describeRecord(at.route.name, at.storeKey, record), recentAttempts: recent });
  });

  const time = z.union([z.iso.datetime({ offset: true }), z.iso.date()]).transform((v) => Date.parse(v));
  const attemptQuery = z.looseObject({
    route: z.string().optional(),
    outcome: z.string().optional(),
    key: z.string().optional().describe("a stored key (hash), as lookups and logs show it"),
    from: time.optional(),
    to: time.optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(50),
  });
  app.get("/attempts", async (c) => {
    const raw = c.req.query();
    const query = attemptQuery.safeParse(raw);
    if (!query.success) {
      const first = query.error.issues[0];
      const detail = `${formatPath(first?.path ?? [])}: ${first?.message ?? "invalid"}`;
      return problem(400, "INVALID_ADMIN_REQUEST", "Invalid admin request", detail);
    }
    const { route, outcome, key, from, to, limit } = query.data;
    // field.invoiceNumber=4711: rows whose key fields hold that value.
    const fields = Object.fromEntries(
      Object.entries(raw)
        .filter(([name]) => name.startsWith("field."))
        .map(([name, value]) => [name.slice("field.".length), value]),
    );
    const unknown = Object.keys(raw).find((n) => !n.startsWith("field.") && !(n in attemptQuery.shape));
    if (unknown !== undefined) {
      return problem(400, "INVALID_ADMIN_REQUEST", "Invalid admin request", `${unknown}: unknown parameter`);
    }
    const byFieldOrTime = Object.keys(fields).length > 0 || from !== undefined || to !== undefined;
    if (!deps.callbackLog) {
      if (byFieldOrTime) {
        return problem(
          400,
          "INVALID_ADMIN_REQUEST",
          "Invalid admin request",
          "field.* and from/to need the CallbackLog (audit.sink: postgres)",
        );
      }
      return c.json({ attempts: await deps.store.recentAttempts({ route, outcome, storeKey: key, limit }) });
    }
    const attempts = await deps.callbackLog.query({
      route,
      outcome,
      storeKey: key,
      fields: Object.keys(fields).length > 0 ? fields : undefined,
      from,
      to,
      limit,
    });
    return c.json({ attempts });
  });

  app.post("/keys/purge", async (c) => {
    const ref = await parse(c.req.raw, keyRef);
    if (ref instanceof Response) return ref;
    const at = locate(ref);
    if (at instanceof Response) return at;
    return c.json({
      route: at.route.name,
      storeKey: at.storeKey,
      purged: await deps.store.purge(at.storeKey),
    });
  });

  app.post("/keys/resolve", async (c) => {
    const body = await parse(c.req.raw, resolveBody);
    if (body instanceof Response) return body;
    const at = locate(body);
    if (at instanceof Response) return at;
    if (body.action === "store" && !body.response) {
      return problem(
        400,
        "INVALID_ADMIN_REQUEST",
        "Invalid admin request",
        'response: required with action "store"',
      );
    }
    const response = body.response && {
      status: body.response.status,
      headers: body.response.headers,
      body: Buffer.from(body.response.body, body.response.encoding),
    };
    const done = await deps.store.resolveUnknown(at.storeKey, response ?? null, at.route.settings.ttlMs);
    if (!done) {
      return problem(
        409,
        "NOT_UNKNOWN",
        "Key is not unknown",
        "only a key whose outcome is unknown can be resolved",
      );
    }
    const record = await deps.store.get(at.storeKey);
    return c.json({
      resolved: body.action,
      ...(record
        ? describeRecord(at.route.name, at.storeKey, record)
        : { route: at.route.name, storeKey: at.storeKey }),
    });
  });

  app.notFound(() => problem(404, "NOT_FOUND", "Not found", "no such admin endpoint"));
  app.onError((err) =>
    problem(
      503,
      "STORE_UNAVAILABLE",
      "Idempotency store unavailable",
      `the store cannot be reached: ${err.message}`,
      {
        "retry-after": "5",
      },
    ),
  );
  return app;
}

export async function startAdmin(
  deps: AdminDeps,
  host: string,
  port: number,
): Promise<{ url: string; server: ServerType }> {
  const app = createAdminApp(deps);
  const server = serve({ fetch: app.fetch, port, hostname: host });
  server.on("clientError", (err: Error, socket: Socket) => answerClientError(err, socket, deps.logger));
  const info = await listening(
    server as Server,
    "admin.port, --admin-port or ADMIN_PORT (false turns it off)",
    `admin port ${port} on ${host}`,
  );
  return {
    url: `http://${info.family === "IPv6" ? `[${info.address}]` : info.address}:${info.port}`,
    server,
  };
}
