import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { type AddressInfo, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";

export interface TestRedis {
  url: string;
  port: number;
  /** The server's working dir (only for an owned server). */
  dir?: string;
  /** Whether this helper owns the server (false when REDIS_URL points at an existing one). */
  owned: boolean;
  stop(): Promise<void>;
  /** Starts it again on the same port (only for an owned server). */
  start(): Promise<void>;
  close(): Promise<void>;
}

const INSTALL_HINT =
  "redis-server is not on the PATH: install it (Debian/Ubuntu: apt-get install redis-server) or set REDIS_URL to a server the tests may use";

function hasRedisServer(): boolean {
  try {
    execFileSync("redis-server", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Fails with one line when redis-server is not installed. */
export function requireRedisServer(): void {
  if (!hasRedisServer()) throw new Error(INSTALL_HINT);
}

export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port as number;
}

/** A server listening on `port` of 127.0.0.1 alone (not shared with cluster workers); none if taken. */
export const listenOn = (port: number) =>
  new Promise<Server | undefined>((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(undefined));
    server.listen({ port, host: "127.0.0.1", exclusive: true }, () => resolve(server));
  });

/**
 * `count` distinct free ports. Each is held until all are chosen, because the kernel may hand out a
 * port it has just taken back, and two servers of one test on one port is a test that fails once in
 * a few hundred runs. With `alsoFree`, each port's companion (a cluster node's bus port, 10000 above
 * its own) was free too and is not one of the others.
 */
export async function freePorts(count: number, alsoFree?: (port: number) => number): Promise<number[]> {
  const held: Server[] = [];
  const ports: number[] = [];
  try {
    for (let tries = 0; ports.length < count; tries++) {
      if (tries > count * 20) throw new Error(`could not find ${count} free ports`);
      const server = await listenOn(0);
      if (!server) continue;
      held.push(server);
      const port = (server.address() as AddressInfo).port;
      const companion = alsoFree?.(port);
      if (companion !== undefined) {
        const other = companion <= 65535 ? await listenOn(companion) : undefined;
        if (!other) continue;
        held.push(other);
      }
      ports.push(port);
    }
    return ports;
  } finally {
    await Promise.all(held.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

/** A server of a test's could not bind its port: something else took it after it was chosen. */
export class PortTakenError extends Error {}

/**
 * Runs `attempt` again, on ports chosen anew, when it failed because a port it had chosen was taken
 * in the meantime (by a server of another test file, or an outgoing connection's local port).
 */
export async function onFreshPorts<T>(attempt: () => Promise<T>, tries = 3): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await attempt();
    } catch (err) {
      if (!(err instanceof PortTakenError) || i >= tries) throw err;
    }
  }
}

/**
 * Polls `check` until it holds, for a server's state that no event announces (a cluster agreeing on
 * a failover, a replica catching up). Bounded: it fails after `timeoutMs`.
 */
export async function until(
  check: () => Promise<boolean>,
  timeoutMs: number,
  what = "condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} not reached within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Runs `fn` on a connection of its own to the server on `port`, closed afterwards. */
export async function ask<T>(port: number, fn: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis({ port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 0 });
  r.on("error", () => {});
  try {
    await r.connect();
    return await fn(r);
  } finally {
    r.disconnect();
  }
}

/** One redis-server process of a test's own. */
export interface RedisServer {
  running(): boolean;
  /** SIGTERM, and waits for the exit. */
  stop(): Promise<void>;
  /** SIGKILL, and waits for the exit. */
  kill(): Promise<void>;
  signal(name: NodeJS.Signals): void;
}

/**
 * Starts redis-server on `port` with `dir` as its working dir, no persistence unless `args` turn it
 * on (later arguments win), and resolves once it accepts connections. A config file (a sentinel's)
 * comes first.
 */
export async function spawnRedisServer(
  port: number,
  dir: string,
  args: string[] = [],
  configFile?: string,
): Promise<RedisServer> {
  const child = spawn(
    "redis-server",
    [
      ...(configFile ? [configFile] : []),
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
      ...args,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on("data", (c: Buffer) => {
      out += c.toString();
      if (out.includes("Ready to accept connections") || out.includes("Sentinel ID is")) resolve();
    });
    child.once("exit", (code) => {
      const message = `redis-server exited (${code}):\n${out}`;
      reject(/Address already in use/.test(out) ? new PortTakenError(message) : new Error(message));
    });
  });
  const end = async (signal: NodeJS.Signals) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill(signal);
    await exited;
  };
  return {
    running: () => child.exitCode === null && child.signalCode === null,
    stop: () => end("SIGTERM"),
    kill: () => end("SIGKILL"),
    signal: (name) => child.kill(name),
  };
}

export interface StartRedisOptions {
  /** More redis-server arguments: --appendonly yes, TLS, an ACL user. */
  args?: string[];
  /** Needs a server of the test's own (ignores REDIS_URL). */
  own?: boolean;
}

/**
 * A private redis-server on a free port with a temporary dir, so a test can stop and restart it;
 * REDIS_URL points the tests at an existing server instead. With neither, it fails with one line.
 */
export async function startRedis(options: StartRedisOptions = {}): Promise<TestRedis> {
  const external = process.env.REDIS_URL;
  if (external && !options.own) {
    const port = Number(new URL(external).port || 6379);
    const fail = () => Promise.reject(new Error("cannot stop or start a server given by REDIS_URL"));
    return { url: external, port, owned: false, stop: fail, start: fail, close: async () => {} };
  }
  requireRedisServer();
  const dir = await mkdtemp(join(tmpdir(), "idem-redis-"));
  let port = 0;
  let server: RedisServer | undefined;
  const start = async () => {
    server = await spawnRedisServer(port, dir, options.args);
  };
  const stop = async () => {
    await server?.stop();
  };
  await onFreshPorts(async () => {
    port = await freePort();
    await start();
  });
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    owned: true,
    stop,
    start,
    close: async () => {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
