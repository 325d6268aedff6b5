import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestRedis {
  url: string;
  port: number;
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

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * A private redis-server on a free port with a temporary dir, so a test can stop and restart it;
 * REDIS_URL points the tests at an existing server instead. With neither, it fails with one line.
 */
export async function startRedis(): Promise<TestRedis> {
  const external = process.env.REDIS_URL;
  if (external) {
    const port = Number(new URL(external).port || 6379);
    const fail = () => Promise.reject(new Error("cannot stop or start a server given by REDIS_URL"));
    return { url: external, port, owned: false, stop: fail, start: fail, close: async () => {} };
  }
  if (!hasRedisServer()) throw new Error(INSTALL_HINT);
  const dir = await mkdtemp(join(tmpdir(), "idem-redis-"));
  const port = await freePort();
  let proc: ChildProcess | undefined;

  async function start(): Promise<void> {
    const child = spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    proc = child;
    let out = "";
    await new Promise<void>((resolve, reject) => {
      child.stdout?.on("data", (c: Buffer) => {
        out += c.toString();
        if (out.includes("Ready to accept connections")) resolve();
      });
      child.once("exit", (code) => reject(new Error(`redis-server exited (${code}):\n${out}`)));
    });
  }

  async function stop(): Promise<void> {
    const child = proc;
    proc = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGTERM");
    await exited;
  }

  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    owned: true,
    stop,
    start,
    close: async () => {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
