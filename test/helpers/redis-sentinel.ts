import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ask, freePorts, type RedisServer, requireRedisServer, spawnRedisServer, until } from "./redis.js";

export const SENTINEL_NAME = "idem";

export interface TestRedisSentinel {
  /** host:port of the sentinel. */
  sentinels: string[];
  name: string;
  /** The port of the primary the sentinel names now. */
  primary(): Promise<number>;
  /** The port of a replica of the current primary. */
  replica(): Promise<number>;
  /** Stops (SIGSTOP) or resumes (SIGCONT) the server on `port`: it keeps its sockets and answers nothing. */
  pause(port: number): void;
  resume(port: number): void;
  /** Asks the sentinel for a failover (SENTINEL FAILOVER) and resolves once the replica took over. Run it last. */
  failover(): Promise<number>;
  close(): Promise<void>;
}

/**
 * A primary, its replica and one sentinel watching them (quorum 1), on free ports. One sentinel is
 * enough to fail over on a test's request; production runs three or more.
 */
export async function startRedisSentinel(): Promise<TestRedisSentinel> {
  requireRedisServer();
  const dir = await mkdtemp(join(tmpdir(), "idem-sentinel-"));
  const [primaryPort, replicaPort, sentinelPort] = (await freePorts(3)) as [number, number, number];
  const servers: RedisServer[] = [];
  const byPort = new Map<number, RedisServer>();
  const primary = async () => {
    const [, port] = (await ask(sentinelPort, (r) =>
      r.call("SENTINEL", "get-master-addr-by-name", SENTINEL_NAME),
    )) as [string, string];
    return Number(port);
  };
  const replica = async () => {
    const list = (await ask(sentinelPort, (r) =>
      r.call("SENTINEL", "replicas", SENTINEL_NAME),
    )) as string[][];
    const fields = list[0] ?? [];
    return Number(fields[fields.indexOf("port") + 1]);
  };
  const replicated = (port: number) =>
    ask(port, (r) => r.info("replication")).then(
      (info) => /connected_slaves:[1-9]/.test(info) && /slave0:.*state=online/.test(info),
      () => false,
    );

  try {
    for (const [port, extra] of [
      [primaryPort, []],
      [replicaPort, ["--replicaof", "127.0.0.1", String(primaryPort)]],
    ] as const) {
      const nodeDir = join(dir, String(port));
      await mkdir(nodeDir);
      const server = await spawnRedisServer(port, nodeDir, [...extra]);
      servers.push(server);
      byPort.set(port, server);
    }
    await until(() => replicated(primaryPort), 30_000, "replica in sync");
    const sentinelDir = join(dir, "sentinel");
    await mkdir(sentinelDir);
    // A sentinel rewrites its config file: it must be a file of its own, writable.
    const conf = join(sentinelDir, "sentinel.conf");
    await writeFile(
      conf,
      [
        `sentinel monitor ${SENTINEL_NAME} 127.0.0.1 ${primaryPort} 1`,
        `sentinel down-after-milliseconds ${SENTINEL_NAME} 1000`,
        `sentinel failover-timeout ${SENTINEL_NAME} 10000`,
        "",
      ].join("\n"),
    );
    servers.push(await spawnRedisServer(sentinelPort, sentinelDir, ["--sentinel"], conf));
    await until(
      () =>
        ask(sentinelPort, (r) => r.call("SENTINEL", "replicas", SENTINEL_NAME)).then(
          (list) => Array.isArray(list) && list.length > 0,
          () => false,
        ),
      30_000,
      "sentinel sees the replica",
    );
  } catch (err) {
    await Promise.all(servers.map((s) => s.stop()));
    await rm(dir, { recursive: true, force: true });
    throw err;
  }

  return {
    sentinels: [`127.0.0.1:${sentinelPort}`],
    name: SENTINEL_NAME,
    primary,
    pause: (port) => byPort.get(port)?.signal("SIGSTOP"),
    resume: (port) => byPort.get(port)?.signal("SIGCONT"),
    replica,
    async failover() {
      const before = await primary();
      // A graceful failover: the replica has everything the primary took before it is promoted
      // (replication is asynchronous; losing writes on a failover is the cluster test's subject).
      const offset = (port: number, field: string) =>
        ask(port, (r) => r.info("replication")).then((info) =>
          Number(new RegExp(`${field}:(\\d+)`).exec(info)?.[1]),
        );
      const target = await offset(before, "master_repl_offset");
      const replicaPort = await replica();
      await until(
        async () => (await offset(replicaPort, "slave_repl_offset")) >= target,
        10_000,
        "replica caught up",
      );
      await ask(sentinelPort, (r) => r.call("SENTINEL", "FAILOVER", SENTINEL_NAME));
      await until(async () => (await primary()) !== before, 30_000, "sentinel failover");
      const after = await primary();
      // The sentinel names the new primary once it took REPLICAOF NO ONE; the old one follows it
      // later (seconds: the sentinel reconfigures it at its next look), which this does not wait for.
      await until(
        () =>
          ask(after, (r) => r.info("replication")).then(
            (i) => i.includes("role:master"),
            () => false,
          ),
        30_000,
        "new primary writable",
      );
      return after;
    },
    async close() {
      await Promise.all(servers.map((s) => s.stop()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
