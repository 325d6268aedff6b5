import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo, Server, Socket } from "node:net";
import { serve } from "@hono/node-server";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { PostgresCallbackLog } from "../audit/callback-log.js";
import { callbackRow } from "../audit/rows.js";
import { type CompiledRoute, type Config, RouteTable } from "../config/index.js";
import { IdempotencyEngine } from "../idempotency/index.js";
import { TrustedProxies, Upstream, warmHttpParser } from "../proxy/index.js";
import { createStore, type IdempotencyStore } from "../store/index.js";
import { accessLog } from "./access-log.js";
import { startAdmin } from "./admin.js";
import { createApp, refuseOversizeExpect } from "./app.js";
import { AttemptLog } from "./attempt-log.js";
import { answerClientError } from "./client-error.js";
import { configuredCap } from "./connection-cap.js";
import { listening } from "./listen.js";
import { createLogger } from "./logger.js";
import { GatewayMetrics, MeasuredStore } from "./metrics.js";
import { type RequestEvent, RequestOutcome } from "./observe.js";

export interface RunningGateway {
  url: string;
  port: number;
  /** The admin listener's URL, when it is on. */
  adminUrl: string | undefined;
  /** Client connections accepted at once: listen.maxConnections, `auto` resolved. */
  maxConnections: number;
  /** Requests forwarded unprotected while the store was unreachable (failMode: open). */
  unprotectedForwards(): number;
  /** Writes the attempt-log entries still buffered. */
  flushAttempts(): Promise<void>;
  /** This gateway's Prometheus registry. */
  metricsRegistry: Registry;
  store: IdempotencyStore;
  engine: IdempotencyEngine;
  /** Stops accepting, lets attempts under way finish and store (up to the drain timeout), then closes. */
  close(): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  /** A store made elsewhere (tests); by default one is made from the config. */
  store?: IdempotencyStore;
}

/** The CallbackLog (audit.sink: postgres); rows lost to a full spool are counted. */
async function openCallbackLog(
  config: Config,
  logger: Logger,
  metrics: GatewayMetrics,
  store: IdempotencyStore,
): Promise<PostgresCallbackLog> {
  const pg = config.audit.postgres;
  try {
    // Loaded only here: the PostgreSQL client is some 15 MB of a gateway that does not use it.
    const { PostgresCallbackLog } = await import("../audit/callback-log.js");
    return await PostgresCallbackLog.open({
      url: pg.url as string,
      spool: pg.spool,
      spoolMaxBytes: pg.spoolMaxBytes,
      retentionMs: pg.retention,
      migrate: pg.migrate,
      logger,
      onLost: (rows) => metrics.auditLost.inc(rows),
    });
  } catch (err) {
    await store.close();
    throw err;
  }
}

export async function startGateway(config: Config, options: StartOptions = {}): Promise<RunningGateway> {
  const logger = options.logger ?? createLogger(config.log);
  // Beside the store's start; done before the gateway listens.
  const warming = warmHttpParser();
  const upstream = new Upstream({
    url: config.upstream.url,
    timeoutMs: config.upstream.timeout,
    connections: config.upstream.connections,
    keepAliveTimeoutMs: config.upstream.keepAliveTimeout,
  });
  // The engine is built first so that metrics can read its gauges; it sees the store through the
  // measuring wrapper.
  const engineRef: { engine?: IdempotencyEngine } = {};
  const metrics = new GatewayMetrics({
    get activeAttempts() {
      return engineRef.engine?.activeAttempts ?? 0;
    },
    get waitingDuplicates() {
      return engineRef.engine?.waitingDuplicates ?? 0;
    },
  });
  const store =
    options.store ??
    (await createStore(config.store, {
      attemptCapacity: config.audit.attempts,
      onEvict: () => metrics.evictions.inc(),
      onShortfall: (step) => metrics.replicaShortfalls.inc({ step }),
    }));
  // What the store's servers allow is said once at start (and on every /readyz).
  const health = await store.health?.().catch(() => undefined);
  for (const warning of health?.warnings ?? []) logger.warn(warning);
  for (const problem of health?.problems ?? []) logger.error(problem);
  const measured = new MeasuredStore(store, metrics);
  const engine = new IdempotencyEngine(measured, {
    events: {
      leaseLost: (key) => logger.warn({ key }, "attempt lost its lease; another attempt owns the key"),
      storeWriteFailed: (key, err) => logger.error({ key, err }, "store write after forwarding failed"),
      unknownExpired: (key) => {
        metrics.unknownExpired.inc();
        logger.warn(
          { key },
          "a key whose outcome was unknown reached the end of its TTL and is executed again; a duplicate is possible",
        );
      },
    },
  });
  engineRef.engine = engine;
  let unprotected = 0;
  const attempts = new AttemptLog(measured, logger);
  const callbackLog =
    config.audit.sink === "postgres" ? await openCallbackLog(config, logger, metrics, store) : undefined;
  const routes = new RouteTable(config);
  const routeNamed = new Map<string, CompiledRoute>([
    ...routes.routes.map((r) => [r.name, r] as const),
    [routes.fallback.name, routes.fallback],
  ]);
  const writeAccessLine = accessLog(logger);
  const observe = (ev: RequestEvent) => {
    if (ev.outcome === RequestOutcome.Unprotected) unprotected++;
    metrics.observe(ev);
    if (callbackLog) callbackLog.add(callbackRow(ev, routeNamed.get(ev.route)));
    else if (config.audit.attempts > 0) attempts.add(ev);
    if (config.log.access) writeAccessLine(ev);
  };
  const app = createApp({
    routes,
    engine,
    upstream,
    failMode: config.store.failMode,
    logger,
    observe,
    auditPassThrough: callbackLog && ((ev) => callbackLog.add(callbackRow(ev, routeNamed.get(ev.route)))),
    auditPayloads: config.audit.payloads,
    trust: new TrustedProxies(config.trustProxy.addresses),
    trustedHeaders: config.trustProxy.headers.map((h) => h.toLowerCase()),
  });
  const startingAdmin =
    config.admin.port === false
      ? undefined
      : startAdmin(
          {
            store,
            routes,
            metrics: metrics.registry,
            token: config.admin.token,
            unprotectedForwards: () => unprotected,
            upstreamReachable: () => upstream.reachable(),
            callbackLog,
            logger,
          },
          config.admin.host,
          config.admin.port,
        );
  const admin = await startingAdmin?.catch(async (err: unknown) => {
    await upstream.close();
    await callbackLog?.close();
    await store.close();
    throw err;
  });

  await warming;
  const { listen } = config;
  const server = serve({
    fetch: app.fetch,
    port: listen.port,
    hostname: listen.host,
    serverOptions: {
      headersTimeout: listen.headersTimeout,
      requestTimeout: listen.requestTimeout,
      keepAliveTimeout: listen.keepAliveTimeout,
      maxHeaderSize: listen.maxHeaderSize,
      // Node checks the two timeouts above on this period (30 s by default), so they would fire late.
      connectionsCheckingInterval: Math.max(
        100,
        Math.min(1_000, listen.headersTimeout, listen.requestTimeout || 1_000),
      ),
    },
  });
  const { cap: maxConnections } = configuredCap(config);
  server.maxConnections = maxConnections;
  server.on("clientError", (err: Error, socket: Socket) => answerClientError(err, socket, logger));
  // With a listener, Node leaves 100-continue to us: a body that is too large is refused unsent.
  server.on("checkContinue", (req: IncomingMessage, res: ServerResponse) => {
    if (refuseOversizeExpect(routes, req, res, observe)) return;
    res.writeContinue();
    server.emit("request", req, res);
  });
  let info: AddressInfo;
  try {
    info = await listening(
      server as Server,
      "listen.port, --port or PORT",
      `port ${listen.port} on ${listen.host}`,
    );
  } catch (err) {
    if (admin) await new Promise<void>((resolve) => admin.server.close(() => resolve()));
    await upstream.close();
    await callbackLog?.close();
    await store.close();
    throw err;
  }
  const host = info.family === "IPv6" ? `[${info.address}]` : info.address;

  let closing: Promise<void> | undefined;
  return {
    url: `http://${host}:${info.port}`,
    port: info.port,
    adminUrl: admin?.url,
    maxConnections,
    unprotectedForwards: () => unprotected,
    flushAttempts: () => callbackLog?.flush() ?? attempts.flush(),
    metricsRegistry: metrics.registry,
    store,
    engine,
    close() {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        const drained = await engine.drain(config.shutdown.drainTimeout);
        if (!drained) logger.warn("drain timeout reached with attempts still under way");
        // Responses of drained attempts are written on the next turns; give them a moment, then cut.
        await Promise.race([closed, new Promise((r) => setTimeout(r, 200).unref())]);
        if ("closeAllConnections" in server) server.closeAllConnections();
        await closed;
        await attempts.flush();
        // Every row of this process reaches the database or the spool before it exits.
        await callbackLog?.close();
        if (admin) await new Promise<void>((resolve) => admin.server.close(() => resolve()));
        await upstream.close();
        await store.close();
      })();
      return closing;
    },
  };
}
