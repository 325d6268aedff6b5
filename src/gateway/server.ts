import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { type Logger, pino } from "pino";
import { type Config, RouteTable } from "../config/index.js";
import { IdempotencyEngine } from "../idempotency/index.js";
import { Upstream } from "../proxy/index.js";
import { createStore, type IdempotencyStore } from "../store/index.js";
import { startAdmin } from "./admin.js";
import { createApp } from "./app.js";

export interface RunningGateway {
  url: string;
  port: number;
  /** The admin listener's URL, when it is on. */
  adminUrl: string | undefined;
  /** Requests forwarded unprotected while the store was unreachable (failMode: open). */
  unprotectedForwards(): number;
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

export async function startGateway(config: Config, options: StartOptions = {}): Promise<RunningGateway> {
  const logger = options.logger ?? pino({ level: config.log.level });
  const store = options.store ?? (await createStore(config.store));
  const upstream = new Upstream({
    url: config.upstream.url,
    timeoutMs: config.upstream.timeout,
    connections: config.upstream.connections,
  });
  const engine = new IdempotencyEngine(store, {
    leaseLost: (key) => logger.warn({ key }, "attempt lost its lease; another attempt owns the key"),
    storeWriteFailed: (key, err) => logger.error({ key, err }, "store write after forwarding failed"),
  });
  let unprotected = 0;
  const app = createApp({
    routes: new RouteTable(config),
    engine,
    upstream,
    failMode: config.store.failMode,
    logger,
    onUnprotected: () => {
      unprotected++;
    },
  });
  const admin =
    config.admin.port === false
      ? undefined
      : await startAdmin(
          { store, unprotectedForwards: () => unprotected },
          config.admin.host,
          config.admin.port,
        );

  const { server, info } = await new Promise<{ server: ReturnType<typeof serve>; info: AddressInfo }>(
    (resolve) => {
      const server = serve(
        { fetch: app.fetch, port: config.listen.port, hostname: config.listen.host },
        (info) => resolve({ server, info }),
      );
    },
  );
  const host = info.family === "IPv6" ? `[${info.address}]` : info.address;

  let closing: Promise<void> | undefined;
  return {
    url: `http://${host}:${info.port}`,
    port: info.port,
    adminUrl: admin?.url,
    unprotectedForwards: () => unprotected,
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
        if (admin) await new Promise<void>((resolve) => admin.server.close(() => resolve()));
        await upstream.close();
        await store.close();
      })();
      return closing;
    },
  };
}
