import cluster, { type Worker } from "node:cluster";
import type { Logger } from "pino";
import { AggregatorRegistry } from "prom-client";
import { type Config, RouteTable } from "../config/index.js";
import { Upstream } from "../proxy/index.js";
import { createStore } from "../store/index.js";
import { startAdmin } from "./admin.js";
import { startGateway } from "./server.js";

interface ListeningMessage {
  type: "listening";
  url: string;
}

export interface ClusterHandle {
  url: string;
  adminUrl: string | undefined;
  /** Asks every worker to drain and exit, then closes the admin listener. */
  close(): Promise<void>;
}

/**
 * The primary of `serve --workers N`: forks the workers (they share the listening socket; the
 * kernel spreads connections), restarts one that dies, and serves the admin API itself, with its own
 * store connection and the workers' metrics aggregated over IPC.
 */
export async function runPrimary(config: Config, workers: number, logger: Logger): Promise<ClusterHandle> {
  let stopping = false;
  const urls: string[] = [];
  const fork = (): Worker => {
    const worker = cluster.fork();
    worker.on("message", (msg: ListeningMessage) => {
      if (msg?.type === "listening") urls.push(msg.url);
    });
    return worker;
  };
  cluster.on("exit", (worker, code, signal) => {
    if (stopping) return;
    logger.error({ pid: worker.process.pid, code, signal }, "worker died; starting another");
    fork();
  });
  await new Promise<void>((resolve, reject) => {
    const started = Array.from({ length: workers }, fork);
    let ready = 0;
    for (const w of started) {
      w.once("message", (msg: ListeningMessage) => {
        if (msg?.type === "listening" && ++ready === workers) resolve();
      });
      w.once("exit", (code) => {
        if (ready < workers) reject(new Error(`a worker exited (${code}) before listening`));
      });
    }
  });

  const store = await createStore(config.store, { attemptCapacity: config.audit.attempts });
  const upstream = new Upstream({
    url: config.upstream.url,
    timeoutMs: config.upstream.timeout,
    connections: 1,
  });
  const aggregated = new AggregatorRegistry();
  const clusterMetrics = { metrics: () => aggregated.clusterMetrics(), contentType: aggregated.contentType };
  const admin =
    config.admin.port === false
      ? undefined
      : await startAdmin(
          {
            store,
            routes: new RouteTable(config),
            metrics: clusterMetrics,
            token: config.admin.token,
            unprotectedForwards: () => 0,
            upstreamReachable: () => upstream.reachable(),
            logger,
          },
          config.admin.host,
          config.admin.port,
        );
  return {
    url: urls[0] as string,
    adminUrl: admin?.url,
    async close() {
      stopping = true;
      const all = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);
      await Promise.all(
        all.map(
          (w) =>
            new Promise<void>((resolve) => {
              if (w.isDead()) return resolve();
              w.once("exit", () => resolve());
              w.process.kill("SIGTERM");
            }),
        ),
      );
      if (admin) await new Promise<void>((resolve) => admin.server.close(() => resolve()));
      await store.close();
      await upstream.close();
    },
  };
}

/** A worker of `serve --workers`: a whole gateway without its own admin listener. */
export async function runWorker(config: Config): Promise<void> {
  const gateway = await startGateway({ ...config, admin: { ...config.admin, port: false } });
  // prom-client answers the primary's metric requests only once an AggregatorRegistry exists in
  // this process (its constructor installs the IPC listener); then it reports this gateway's registry.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([gateway.metricsRegistry]);
  process.send?.({ type: "listening", url: gateway.url } satisfies ListeningMessage);
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    gateway.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
