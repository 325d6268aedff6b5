import { readFileSync } from "node:fs";
import type { ConnectionOptions } from "node:tls";
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from "ioredis";
import type { Config } from "../config/index.js";
import { ConfigError } from "../errors.js";

export type RedisSettings = Config["store"]["redis"];
/** Either topology's client: both run the same commands and scripts. */
export type RedisClient = Redis | Cluster;
export type Topology = "standalone" | "cluster" | "sentinel";

export interface RedisConnections {
  topology: Topology;
  /**
   * Requests' commands and scripts: on a cluster auto-pipelined per node; on one primary batched per
   * turn of the event loop by the store (WriteBatch), which costs less.
   */
  commands: RedisClient;
  /** Waiters' subscriptions; on a cluster, sharded (SSUBSCRIBE to the node that owns the key's slot). */
  subscriber: RedisClient;
  /** Where the connection goes, without credentials: for logs and /readyz. */
  where: string;
}

/** How long one command may take, and how a client retries; the same for every topology. */
export interface ClientTiming {
  commandTimeoutMs: number;
  connectTimeoutMs: number;
}

interface Address {
  host: string;
  port: number;
}

function address(node: string): Address {
  const url = new URL(/^rediss?:\/\//.test(node) ? node : `redis://${node}`);
  return { host: url.hostname.replace(/^\[|\]$/g, ""), port: Number(url.port || 6379) };
}

function tlsOptions(settings: RedisSettings, fromUrl: boolean): ConnectionOptions | undefined {
  const tls = settings.tls;
  if (tls === false || (tls === undefined && !fromUrl)) return undefined;
  if (tls === true || tls === undefined) return {};
  const file = (field: string, path: string | undefined) => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      throw new ConfigError([
        `store.redis.tls.${field}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? String(err)})`,
      ]);
    }
  };
  return {
    ...(tls.ca !== undefined ? { ca: file("ca", tls.ca) } : {}),
    ...(tls.cert !== undefined ? { cert: file("cert", tls.cert) } : {}),
    ...(tls.key !== undefined ? { key: file("key", tls.key) } : {}),
    ...(tls.servername !== undefined ? { servername: tls.servername } : {}),
  };
}

/**
 * The ioredis clients for the configured topology. ioredis does the topology work itself: slot
 * routing and MOVED/ASK on a cluster, asking the sentinels for the primary (again after a failover).
 */
export function connectRedis(settings: RedisSettings, timing: ClientTiming): RedisConnections {
  const url = new URL(settings.url);
  const viaUrl = settings.cluster === undefined && settings.sentinel === undefined;
  const tls = tlsOptions(settings, viaUrl && url.protocol === "rediss:");
  const username =
    settings.username ?? (viaUrl && url.username ? decodeURIComponent(url.username) : undefined);
  const password =
    settings.password ?? (viaUrl && url.password ? decodeURIComponent(url.password) : undefined);
  const base: RedisOptions = {
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(tls ? { tls } : {}),
    // Fail fast instead of queueing while disconnected: a request must get 503, not hang.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: timing.commandTimeoutMs,
    connectTimeout: timing.connectTimeoutMs,
    retryStrategy: (times: number) => Math.min(50 * 2 ** times, 1_000),
    // A primary demoted under us answers READONLY: reconnect, to whatever the sentinels (or, for a
    // managed service's DNS name, the resolver) now name. The refused command is not resent (with no
    // offline queue it could not be); it changed nothing, and fails as STORE_REFUSED.
    reconnectOnError: (err: Error) => (err.message.startsWith("READONLY") ? 1 : false),
  };
  // Subscriptions are made before the store is up and kept across reconnects.
  const subscriberBase: RedisOptions = { ...base, enableOfflineQueue: true, commandTimeout: undefined };

  if (settings.cluster) {
    const nodes = settings.cluster.map(address);
    const cluster = (redisOptions: RedisOptions, extra: ClusterOptions) =>
      new Cluster(nodes, {
        redisOptions,
        enableOfflineQueue: redisOptions.enableOfflineQueue ?? false,
        // A failover's MOVED and CLUSTERDOWN are retried inside ioredis for this long, not answered 503.
        retryDelayOnFailover: 100,
        retryDelayOnClusterDown: 100,
        clusterRetryStrategy: (times: number) => Math.min(50 * 2 ** times, 1_000),
        slotsRefreshTimeout: timing.connectTimeoutMs,
        ...extra,
      });
    return {
      topology: "cluster",
      commands: cluster(base, { enableAutoPipelining: true }),
      subscriber: cluster(subscriberBase, { shardedSubscribers: true }),
      where: `cluster ${settings.cluster.map((n) => `${address(n).host}:${address(n).port}`).join(",")}`,
    };
  }

  if (settings.sentinel) {
    const sentinel = settings.sentinel;
    const sentinelOptions: RedisOptions = {
      sentinels: sentinel.nodes.map(address),
      name: sentinel.name,
      ...(sentinel.username !== undefined ? { sentinelUsername: sentinel.username } : {}),
      ...(sentinel.password !== undefined ? { sentinelPassword: sentinel.password } : {}),
      ...(tls ? { enableTLSForSentinelMode: true, sentinelTLS: tls } : {}),
      // Follow +switch-master at once rather than at the next failed command.
      failoverDetector: true,
    };
    return {
      topology: "sentinel",
      commands: new Redis({ ...base, ...sentinelOptions }),
      subscriber: new Redis({ ...subscriberBase, ...sentinelOptions }),
      where: `sentinel ${sentinel.name} via ${sentinel.nodes.map((n) => `${address(n).host}:${address(n).port}`).join(",")}`,
    };
  }

  const at: RedisOptions = {
    ...address(settings.url),
    ...(url.pathname.length > 1 ? { db: Number(url.pathname.slice(1)) } : {}),
  };
  return {
    topology: "standalone",
    commands: new Redis({ ...base, ...at }),
    subscriber: new Redis({ ...subscriberBase, ...at }),
    where: `${url.protocol}//${at.host}:${at.port}`,
  };
}
