import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  ask,
  freePorts,
  onFreshPorts,
  type RedisServer,
  requireRedisServer,
  spawnRedisServer,
  until,
} from "./redis.js";

const run = promisify(execFile);

export interface TestRedisCluster {
  /** host:port of every node, primaries and replicas. */
  seeds: string[];
  ports: number[];
  /** The port of the primary that serves `slot` now. */
  primaryOf(slot: number): Promise<number>;
  /** The ports of that primary's replicas. */
  replicasOf(primary: number): Promise<number[]>;
  /** Kills a node without warning (SIGKILL). */
  kill(port: number): Promise<void>;
  /** Starts a killed node again on its port and dir: it rejoins, as a replica of whoever took over. */
  restart(port: number): Promise<void>;
  /** Cuts a primary's replication links (CLIENT KILL TYPE replica): what it takes next reaches no replica. */
  cutReplication(port: number): Promise<void>;
  /** Stops (SIGSTOP) or resumes (SIGCONT) a node, which keeps its sockets but answers nothing. */
  pause(port: number): void;
  resume(port: number): void;
  /** Resolves once every live node sees the cluster as ok and `port` serves `slot` as primary. */
  settled(slot?: number, port?: number): Promise<void>;
  close(): Promise<void>;
}

const CLUSTER_ARGS = [
  "--cluster-enabled",
  "yes",
  "--cluster-config-file",
  "nodes.conf",
  "--cluster-node-timeout",
  "1000",
  "--cluster-replica-validity-factor",
  "0",
];

/** Six nodes in a dir of their own, joined by `redis-cli --cluster create`; nothing is left on failure. */
async function createCluster() {
  const dir = await mkdtemp(join(tmpdir(), "idem-cluster-"));
  // A node also listens on its bus port, 10000 above its own.
  const ports = await freePorts(6, (port) => port + 10000);
  const servers = new Map<number, RedisServer>();
  try {
    await Promise.all(
      ports.map(async (port) => {
        const nodeDir = join(dir, String(port));
        await mkdir(nodeDir);
        servers.set(port, await spawnRedisServer(port, nodeDir, CLUSTER_ARGS));
      }),
    );
    await run("redis-cli", [
      "--cluster",
      "create",
      ...ports.map((p) => `127.0.0.1:${p}`),
      "--cluster-replicas",
      "1",
      "--cluster-yes",
    ]);
    return { dir, ports, servers };
  } catch (err) {
    await Promise.all([...servers.values()].map((s) => s.stop()));
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/**
 * A local Redis Cluster: 3 primaries with a replica each, on free ports, made by `redis-cli --cluster
 * create`. Failure detection is quick (node timeout 1 s) and a replica may always take over, so
 * that a test can kill a primary and wait for the failover.
 */
export async function startRedisCluster(): Promise<TestRedisCluster> {
  requireRedisServer();
  const { dir, ports, servers } = await onFreshPorts(createCluster);
  const live = () => [...servers.entries()].filter(([, s]) => s.running()).map(([p]) => p);

  // [first slot, last slot, primary [host, port, id], ...replicas]
  type Node = [string, number, ...unknown[]];
  type SlotRange = [number, number, Node, ...Node[]];
  const slots = async (): Promise<SlotRange[]> => {
    for (const port of live()) {
      try {
        return (await ask(port, (r) => r.cluster("SLOTS"))) as unknown as SlotRange[];
      } catch {}
    }
    throw new Error("no cluster node answers");
  };
  const primaryOf = async (slot: number) => {
    const range = (await slots()).find(([from, to]) => slot >= from && slot <= to);
    if (!range) throw new Error(`slot ${slot} is not served`);
    return range[2][1];
  };

  const cluster: TestRedisCluster = {
    seeds: ports.map((p) => `127.0.0.1:${p}`),
    ports,
    primaryOf,
    async replicasOf(primary) {
      const range = (await slots()).find((r) => r[2][1] === primary);
      return range ? (range.slice(3) as Node[]).map((node) => node[1]) : [];
    },
    async kill(port) {
      await servers.get(port)?.kill();
    },
    async restart(port) {
      servers.set(port, await spawnRedisServer(port, join(dir, String(port)), CLUSTER_ARGS));
    },
    async cutReplication(port) {
      await ask(port, (r) => r.client("KILL", "TYPE", "replica"));
    },
    pause(port) {
      servers.get(port)?.signal("SIGSTOP");
    },
    resume(port) {
      servers.get(port)?.signal("SIGCONT");
    },
    async settled(slot, port) {
      await until(async () => {
        for (const p of live()) {
          const info = await ask(p, (r) => r.cluster("INFO")).catch(() => "");
          if (!String(info).includes("cluster_state:ok")) return false;
        }
        return slot === undefined || (await primaryOf(slot).catch(() => -1)) === port;
      }, 30_000);
    },
    async close() {
      await Promise.all([...servers.values()].map((s) => s.stop()));
      await rm(dir, { recursive: true, force: true });
    },
  };
  await cluster.settled();
  await until(async () => (await slots()).every((range) => range.length > 3), 30_000, "replicas known");
  return cluster;
}
