import { z } from "zod";
import { templateProblems } from "./error-body.js";
import { parsePointer, parseSource, parseTemplate, type Source, type Template } from "./sources.js";
import { isAddressOrSubnet, parseDuration, parseSize } from "./units.js";

const duration = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const ms = parseDuration(value);
  if (ms === undefined) {
    ctx.addIssue({
      code: "custom",
      message: `invalid duration "${value}" (expected whole milliseconds, e.g. 500ms, 10s, 1.5s, 5m, 24h, 7d)`,
    });
    return z.NEVER;
  }
  return ms;
});

/** log.buffer when the config sets none; also for loggers made without a config. */
export const DEFAULT_LOG_BUFFER = 4 * 1024 * 1024;

const size = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const bytes = parseSize(value);
  if (bytes === undefined) {
    ctx.addIssue({ code: "custom", message: `invalid size "${value}" (expected e.g. 512kb, 1mb)` });
    return z.NEVER;
  }
  return bytes;
});

const source = z.string().transform((text, ctx): Source => {
  const parsed = parseSource(text);
  if (typeof parsed === "string") {
    ctx.addIssue({ code: "custom", message: parsed });
    return z.NEVER;
  }
  return parsed;
});

const method = z
  .string()
  .regex(/^[A-Za-z]+$/, "invalid HTTP method")
  .transform((m) => m.toUpperCase());

const FINGERPRINT_PARTS = ["method", "path", "query", "body"] as const;
export type FingerprintPart = (typeof FINGERPRINT_PARTS)[number] | Source;
const fingerprintPart = z.string().transform((text, ctx): FingerprintPart => {
  if ((FINGERPRINT_PARTS as readonly string[]).includes(text))
    return text as (typeof FINGERPRINT_PARTS)[number];
  const parsed = parseSource(text);
  if (typeof parsed === "string") {
    ctx.addIssue({ code: "custom", message: `${parsed}; or one of ${FINGERPRINT_PARTS.join(", ")}` });
    return z.NEVER;
  }
  return parsed;
});

const cacheEntry = z.union([
  z.enum(["1xx", "2xx", "3xx", "4xx", "5xx"]),
  z.number().int().min(100).max(599),
  z
    .string()
    .regex(/^[1-5]\d\d$/, 'expected a status class such as "2xx" or a status code such as 201')
    .transform(Number),
]);

const statusCode = z.number().int().min(100).max(599);

const reconcileRule = z.strictObject({
  probe: z.strictObject({
    method: method.default("GET"),
    path: z
      .string()
      .startsWith("/", 'a probe path starts with "/"')
      .transform((text, ctx): { text: string; template: Template } => {
        const template = parseTemplate(text);
        if (typeof template === "string") {
          ctx.addIssue({ code: "custom", message: template });
          return z.NEVER;
        }
        return { text, template };
      })
      .describe("Path and query of the probe, with {source} placeholders filled from the original request."),
  }),
  found: z
    .array(statusCode)
    .min(1)
    .default([200])
    .describe("Probe statuses meaning the operation was executed."),
  notFound: z.array(statusCode).min(1).default([404]).describe("Probe statuses meaning it was not."),
  replay: z
    .strictObject({
      status: statusCode.optional().describe("The status replayed. By default, the probe's."),
      body: z
        .string()
        .transform((text, ctx): { text: string; tokens: string[] } => {
          const tokens = parsePointer(text);
          if (typeof tokens === "string") {
            ctx.addIssue({ code: "custom", message: tokens });
            return z.NEVER;
          }
          return { text, tokens };
        })
        .optional()
        .describe(
          "JSON pointer to the part of the probe's body replayed (e.g. /0 of a search's list); when it points " +
            "at nothing, the probe found nothing. By default, the whole body.",
        ),
    })
    .optional()
    .describe(
      "How a found probe answer becomes the replayed response, in the shape the original caller got.",
    ),
  settle: duration
    .optional()
    .describe(
      "How long after an attempt turned unknown its request may still commit on the backend; a probe's " +
        "notFound is trusted only after it. By default, upstream.timeout.",
    ),
});
export type ReconcileRule = z.output<typeof reconcileRule>;

const keyRule = z.strictObject({
  header: z
    .union([z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "invalid header name"), z.literal(false)])
    .optional()
    .describe(
      "Header that carries a client key; false ignores it. By default, Idempotency-Key on a route without " +
        "key.from, and none on a route with key.from: the business key decides, whatever key a client mints " +
        "per attempt. Naming the header on such a route lets a present header win over key.from.",
    ),
  required: z.boolean().optional().describe("Answer 400 when no key can be found. By default, false."),
  from: z
    .array(source)
    .min(1)
    .optional()
    .describe("Sources of a derived key (the key of a route that names them, unless key.header is set too)."),
});
export type KeyRule = z.output<typeof keyRule>;

const errorBody = z
  .strictObject({
    template: z
      .unknown()
      .optional()
      .describe(
        "A JSON value (written as YAML) whose strings may name {code}, {status}, {title}, {detail}, {retryable}, " +
          "{retryAfter}, {requestId}, {type}, {instance}, {state}, {source}, {header}, {limit}. By default, none: " +
          "RFC 9457 problem+json.",
      ),
    contentType: z
      .string()
      .regex(/^[\w.+-]+\/[\w.+-]+(\s*;.*)?$/, "expected a media type such as application/json")
      .optional()
      .describe("By default, application/json with a template and application/problem+json without."),
  })
  .superRefine((shape, ctx) => {
    for (const message of templateProblems(shape.template)) ctx.addIssue({ code: "custom", message });
  })
  .transform((shape) => ({
    template: shape.template,
    contentType:
      shape.contentType ?? (shape.template === undefined ? "application/problem+json" : "application/json"),
  }));

const identitySource = source.refine((s) => s.kind === "header", {
  message: "an identity is read from a header (Authorization, or one a trusted proxy sets)",
});

/** Settings every route inherits from `defaults` and may override field by field. */
const settingsShape = {
  methods: z
    .array(method)
    .min(1)
    .describe("Methods that are protected. By default, POST, PUT, PATCH, DELETE."),
  key: keyRule,
  scope: z
    .array(source)
    .describe("Sources that partition keys, e.g. a trusted tenant header. By default, none."),
  identity: z
    .array(identitySource)
    .describe(
      "Headers that identify the caller; their values, hashed, are part of every key, so that callers never " +
        "share answers. [] turns it off (with a warning). By default, header:Authorization.",
    ),
  require: z
    .array(source)
    .describe(
      "Fields a request must carry besides its key; one missing is answered 400 MISSING_FIELD naming it, " +
        "and nothing is forwarded. By default, none.",
    ),
  fingerprint: z
    .array(fingerprintPart)
    .describe("What must match on a retry for it to be replayed. By default, method, path and body."),
  operationIdHeader: z
    .union([z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "invalid header name"), z.literal(false)])
    .describe(
      "Header sent upstream with the stored key (a stable hash of the operation), replacing any value the " +
        "client sent, so that a backend with a unique index can refuse a duplicate that got past the gateway " +
        "(after a TTL, a purge, a store loss). By default, false: not sent.",
    ),
  callerTimeout: duration.describe(
    "How long the callers wait for an answer before they give up and retry (a robot's 30s). When set, " +
      "waitTimeout defaults to 5s less (at most half of it less), and check-config warns when waitTimeout or " +
      "upstream.timeout does not fit it. By default, unset.",
  ),
  ttl: duration.describe("How long a stored response is replayed. By default, 24h."),
  lockTtl: duration.describe("Lease of one attempt, extended while the upstream call runs. By default, 10s."),
  concurrent: z
    .enum(["wait", "reject"])
    .describe("What a duplicate of an in-flight request does. By default, wait."),
  waitTimeout: duration.describe(
    "How long a waiting duplicate waits before 409. By default, 25s, or 5s less than callerTimeout.",
  ),
  cache: z
    .array(cacheEntry)
    .describe("Upstream statuses that are stored and replayed. By default, 2xx and 4xx."),
  unknownOn: z
    .array(cacheEntry)
    .describe(
      "Upstream statuses, not in cache, that leave the outcome unknown (a backend may commit, then fail): " +
        "the key becomes unknown and onUnknown decides what a retry gets, instead of the retry executing " +
        "again. By default, 500, 502 and 504.",
    ),
  maxBodySize: size.describe("Largest request body read on a protected route. By default, 1mb."),
  maxResponseSize: size.describe(
    "Largest upstream answer stored. A larger one is streamed to its caller and the key becomes unknown. By default, 10mb.",
  ),
  onUnknown: z
    .enum(["reject", "retry", "reconcile"])
    .describe("What a retry of a request whose outcome is unknown gets. By default, reject."),
  reconcile: reconcileRule.describe("The probe that onUnknown: reconcile asks the backend."),
  errorBody: errorBody.describe("The shape of the gateway's own error answers on the route."),
};

const defaultsSchema = z
  .strictObject({
    methods: settingsShape.methods.default(["POST", "PUT", "PATCH", "DELETE"]),
    key: keyRule.prefault({}),
    scope: settingsShape.scope.default([]),
    require: settingsShape.require.default([]),
    operationIdHeader: settingsShape.operationIdHeader.default(false),
    callerTimeout: settingsShape.callerTimeout.optional(),
    identity: settingsShape.identity.prefault(["header:Authorization"]),
    fingerprint: settingsShape.fingerprint.prefault(["method", "path", "body"]),
    ttl: settingsShape.ttl.prefault("24h"),
    lockTtl: settingsShape.lockTtl.prefault("10s"),
    concurrent: settingsShape.concurrent.default("wait"),
    waitTimeout: settingsShape.waitTimeout.optional(),
    cache: settingsShape.cache.default(["2xx", "4xx"]),
    unknownOn: settingsShape.unknownOn.default([500, 502, 504]),
    maxBodySize: settingsShape.maxBodySize.prefault("1mb"),
    maxResponseSize: settingsShape.maxResponseSize.prefault("10mb"),
    onUnknown: settingsShape.onUnknown.default("reject"),
    reconcile: settingsShape.reconcile.optional(),
    errorBody: settingsShape.errorBody.prefault({}),
  })
  .prefault({});

const routeSchema = z.strictObject({
  name: z
    .string()
    .min(1)
    .regex(/^[A-Za-z0-9_.-]+$/, "use letters, digits, '.', '_' and '-'"),
  match: z.strictObject({
    method: z.union([method, z.array(method).min(1)]).optional(),
    path: z.string().startsWith("/", 'a path pattern starts with "/"'),
    caseSensitive: z
      .boolean()
      .default(false)
      .describe("Match letters in their case only. By default, /Invoices matches /invoices."),
    trailingSlash: z
      .enum(["ignore", "strict"])
      .default("ignore")
      .describe("ignore: /invoices/ matches /invoices and the other way round. By default, ignore."),
  }),
  protect: z.boolean().default(true).describe("false makes the route a plain pass-through."),
  methods: settingsShape.methods.optional(),
  key: keyRule.optional(),
  scope: settingsShape.scope.optional(),
  require: settingsShape.require.optional(),
  operationIdHeader: settingsShape.operationIdHeader.optional(),
  callerTimeout: settingsShape.callerTimeout.optional(),
  identity: settingsShape.identity.optional(),
  fingerprint: settingsShape.fingerprint.optional(),
  ttl: settingsShape.ttl.optional(),
  lockTtl: settingsShape.lockTtl.optional(),
  concurrent: settingsShape.concurrent.optional(),
  waitTimeout: settingsShape.waitTimeout.optional(),
  cache: settingsShape.cache.optional(),
  unknownOn: settingsShape.unknownOn.optional(),
  maxBodySize: settingsShape.maxBodySize.optional(),
  maxResponseSize: settingsShape.maxResponseSize.optional(),
  onUnknown: settingsShape.onUnknown.optional(),
  reconcile: settingsShape.reconcile.optional(),
  errorBody: settingsShape.errorBody.optional(),
});
export type RouteInput = z.output<typeof routeSchema>;
export type DefaultsInput = z.output<typeof defaultsSchema>;

/** A node address: `host:port`, or a redis:// or rediss:// URL (only its host and port are used). */
const redisNode = z
  .string()
  .refine((v) => /^(rediss?:\/\/)?[^\s/:]+:\d+\/?$|^(rediss?:\/\/)?\[[^\]]+\]:\d+\/?$/.test(v), {
    message: "expected host:port (or redis://host:port)",
  });

const redisSchema = z
  .strictObject({
    url: z
      .string()
      .refine((v) => /^rediss?:\/\//.test(v), "expected a redis:// or rediss:// URL")
      .default("redis://127.0.0.1:6379")
      .describe(
        "A standalone server. rediss:// turns TLS on; redis://user:password@host:6379 logs in as an ACL user. " +
          "Not used with cluster or sentinel. By default, redis://127.0.0.1:6379.",
      ),
    cluster: z
      .array(redisNode)
      .min(1)
      .optional()
      .describe("Seed nodes of a Redis Cluster; the others are discovered. Instead of url."),
    sentinel: z
      .strictObject({
        nodes: z.array(redisNode).min(1).describe("The sentinels to ask for the current primary."),
        name: z
          .string()
          .min(1)
          .describe("The primary's name in the sentinels' config (sentinel monitor NAME ...)."),
        username: z.string().optional().describe("ACL user on the sentinels, when they need one."),
        password: z.string().optional().describe("Password on the sentinels, when they need one."),
      })
      .optional()
      .describe("A primary managed by Redis Sentinel, followed across failovers. Instead of url."),
    username: z.string().optional().describe("ACL user on the data nodes (or in url)."),
    password: z
      .string()
      .optional()
      .describe("Password on the data nodes (or in url); REDIS_PASSWORD overrides it."),
    tls: z
      .union([
        z.boolean(),
        z.strictObject({
          ca: z.string().optional().describe("File with the CA certificate(s) to trust, PEM."),
          cert: z.string().optional().describe("Client certificate file, PEM, for servers that ask for one."),
          key: z.string().optional().describe("The client certificate's key file, PEM."),
          servername: z.string().optional().describe("Name to check the server's certificate against."),
        }),
      ])
      .optional()
      .describe("TLS to every node (and sentinel); true uses the system's CAs. rediss:// in url implies it."),
    prefix: z.string().default("idem:"),
    replicas: z
      .number()
      .int()
      .min(0)
      .default(0)
      .describe(
        "Replicas that must hold a key's begin and its stored answer (WAIT) before the gateway forwards " +
          "or answers, so that a failover loses neither. By default, 0: replication stays asynchronous.",
      ),
    replicaTimeout: duration
      .prefault("500ms")
      .describe(
        "How long to wait for those replicas. A begin they do not confirm in time is given back and " +
          "answered 503 STORE_UNAVAILABLE; an answer they do not confirm is sent anyway and counted. By default, 500ms.",
      ),
  })
  .refine((r) => !(r.cluster && r.sentinel), {
    message: "choose one of cluster and sentinel (or neither, for the standalone url)",
  })
  .prefault({});

export const configSchema = z.strictObject({
  listen: z
    .strictObject({
      host: z.string().default("127.0.0.1"),
      port: z.number().int().min(0).max(65535).default(8080).describe("0 picks any free port."),
      headersTimeout: duration
        .prefault("10s")
        .describe("A client must send its request line and headers within this. By default, 10s."),
      requestTimeout: duration
        .prefault("30s")
        .describe(
          "A client must send its whole request, body included, within this (0 turns it off). By default, 30s.",
        ),
      keepAliveTimeout: duration
        .prefault("5s")
        .describe("How long an idle client connection is kept open. By default, 5s."),
      maxConnections: z
        .union([z.literal("auto"), z.number().int().min(1)])
        .default("auto")
        .describe(
          "Client connections accepted at once; more are closed on arrival. auto (the default) is the " +
            "open-file limit less upstream.connections and 256 descriptors kept for the store, logs and admin.",
        ),
      maxHeaderSize: size
        .prefault("16kb")
        .describe("Largest request line plus headers; more is a 431. By default, 16kb."),
    })
    .prefault({}),
  upstream: z.strictObject(
    {
      url: z.url({ protocol: /^https?$/ }).describe("Base URL of the backend."),
      timeout: duration.prefault("60s").describe("Longer than the callers' own timeouts, on purpose."),
      connections: z.number().int().min(1).default(128).describe("Keep-alive connections to the upstream."),
      keepAliveTimeout: duration
        .prefault("1s")
        .describe(
          "How long an idle pooled connection is kept; keep it below the backend's own idle timeout, so " +
            "that the gateway, never the backend, closes an idle connection (a close that crosses a request " +
            "on the wire makes its outcome unknown). A shorter Keep-Alive hint from the backend wins. By default, 1s.",
        ),
    },
    {
      error: (issue) =>
        issue.input === undefined ? "required: set upstream.url, --upstream or UPSTREAM_URL" : undefined,
    },
  ),
  store: z
    .strictObject({
      kind: z.enum(["memory", "redis", "postgres"]).default("memory"),
      redis: redisSchema,
      postgres: z
        .strictObject({
          url: z
            .string()
            .refine((v) => /^postgres(ql)?:\/\//.test(v), "expected a postgres:// URL")
            .default("postgres://127.0.0.1:5432/postgres")
            .describe(
              "The database; STORE_POSTGRES_URL overrides it. By default, postgres://127.0.0.1:5432/postgres.",
            ),
          migrate: z
            .boolean()
            .default(true)
            .describe("Apply the shipped migrations at start (under an advisory lock). By default, true."),
        })
        .prefault({}),
      memory: z
        .strictObject({
          maxEntries: z
            .number()
            .int()
            .min(1)
            .default(100_000)
            .describe("Most records kept; completed ones are evicted, oldest first. By default, 100000."),
          maxBytes: size
            .prefault("256mb")
            .describe("About the most bytes of records kept (bodies, headers, overhead). By default, 256mb."),
        })
        .prefault({}),
      failMode: z.enum(["closed", "open"]).default("closed"),
    })
    .prefault({}),
  shutdown: z
    .strictObject({
      drainTimeout: duration.prefault("30s").describe("How long in-flight attempts may finish on SIGTERM."),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
      pretty: z.boolean().default(false).describe("Human-readable lines instead of JSON. By default, JSON."),
      access: z
        .boolean()
        .default(true)
        .describe(
          "One line per protected request, at info. Off, a request costs less CPU time; metrics and the attempt log still count it.",
        ),
      buffer: size
        .refine((bytes) => bytes >= 4096, "expected at least 4kb (one chunk of log lines)")
        .prefault(DEFAULT_LOG_BUFFER)
        .describe(
          "How much log output may wait for a reader that is slow or has stopped; beyond it, lines are dropped and counted " +
            "(idempotency_gateway_log_lines_dropped_total) and the gateway keeps answering. By default, 4mb.",
        ),
    })
    .prefault({}),
  audit: z
    .strictObject({
      payloads: z
        .boolean()
        .default(false)
        .describe(
          "Keep request bodies in the attempt log. Off by default: they hold personal and financial data.",
        ),
      attempts: z.number().int().min(0).default(10_000).describe("How many attempt-log entries are kept."),
      sink: z
        .enum(["store", "postgres"])
        .default("store")
        .describe(
          "Where the attempt log goes: store (a capped log in the store, a debugging aid) or postgres " +
            "(the CallbackLog table, an audit trail). By default, store.",
        ),
      postgres: z
        .strictObject({
          url: z
            .string()
            .refine((v) => /^postgres(ql)?:\/\//.test(v), "expected a postgres:// URL")
            .optional()
            .describe("The database; AUDIT_POSTGRES_URL overrides it."),
          spool: z
            .string()
            .default("callback-log.spool")
            .describe(
              "File that keeps rows while the database is unreachable, replayed when it is back. By default, callback-log.spool.",
            ),
          spoolMaxBytes: size
            .prefault("1gb")
            .describe("Most bytes the spool may hold; rows beyond it are counted as lost. By default, 1gb."),
          retention: duration
            .prefault("90d")
            .describe("How long rows are kept; older ones are deleted in small batches. By default, 90d."),
          migrate: z
            .boolean()
            .default(true)
            .describe("Apply the shipped migrations at start (under an advisory lock). By default, true."),
        })
        .prefault({}),
    })
    .refine((a) => a.sink !== "postgres" || a.postgres.url !== undefined, {
      message: "postgres.url is required when sink is postgres (or set AUDIT_POSTGRES_URL)",
    })
    .prefault({}),
  admin: z
    .strictObject({
      host: z.string().default("127.0.0.1").describe("By default, loopback only."),
      port: z
        .union([z.number().int().min(0).max(65535), z.literal(false)])
        .default(8081)
        .describe(
          "Port of the admin API and /healthz, /readyz, /metrics; 0 picks any free port, false turns it off.",
        ),
      token: z
        .string()
        .min(16, "use at least 16 characters")
        .optional()
        .describe("Bearer token of the admin API."),
    })
    .prefault({}),
  trustProxy: z
    .strictObject({
      addresses: z
        .array(z.string().refine(isAddressOrSubnet, "expected an IP address or a subnet such as 10.0.0.0/8"))
        .default([])
        .describe(
          "Peers (IPs or subnets) whose X-Forwarded-*/Forwarded headers, and the headers below, are believed. " +
            "By default, none: those headers are overwritten.",
        ),
      headers: z
        .array(z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "invalid header name"))
        .default([])
        .describe(
          "Headers only a trusted proxy sets (a tenant or client-certificate header); from any other peer a " +
            "request carrying one is refused with 400.",
        ),
    })
    .prefault({}),
  unmatched: z
    .enum(["passthrough", "reject"])
    .default("passthrough")
    .describe(
      "What a request that matches no route gets: passthrough (protected only with an Idempotency-Key " +
        "header) or reject (404). By default, passthrough.",
    ),
  defaults: defaultsSchema,
  routes: z.array(routeSchema).default([]),
});

export type ConfigInput = z.input<typeof configSchema>;
export type Config = z.output<typeof configSchema>;
