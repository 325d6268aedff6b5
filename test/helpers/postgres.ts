import { execFile, execFileSync } from "node:child_process";
import { chmod, chown, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort } from "./redis.js";

const run = promisify(execFile);

export interface TestPostgres {
  url: string;
  /** Whether this helper owns the server (false when PG_URL points at an existing one). */
  owned: boolean;
  /** Stops it at once (pg_ctl stop -m immediate: as a crash would), or starts it again. */
  kill(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

const INSTALL_HINT =
  "PostgreSQL's initdb and pg_ctl are not on the PATH: install it (Debian/Ubuntu: apt-get install postgresql) or set PG_URL to a database the tests may use";

/** The directory of initdb and pg_ctl: on the PATH, or where Debian keeps them. */
function postgresBin(): string {
  for (const dir of [
    "",
    "/usr/lib/postgresql/17/bin/",
    "/usr/lib/postgresql/16/bin/",
    "/usr/lib/postgresql/15/bin/",
  ]) {
    try {
      execFileSync(`${dir}pg_ctl`, ["--version"], { stdio: "ignore" });
      return dir;
    } catch {}
  }
  throw new Error(INSTALL_HINT);
}

/**
 * A private PostgreSQL on a free port in a temporary dir (initdb, then pg_ctl), so that a test can
 * kill and restart it; PG_URL points the tests at an existing database instead. PostgreSQL refuses
 * to run as root: as root, it runs as the `postgres` user that Debian's package creates.
 */
export async function startPostgres(): Promise<TestPostgres> {
  const external = process.env.PG_URL;
  if (external) {
    const fail = () => Promise.reject(new Error("cannot stop or start a database given by PG_URL"));
    return { url: external, owned: false, kill: fail, start: fail, close: async () => {} };
  }
  const bin = postgresBin();
  const dir = await mkdtemp(join(tmpdir(), "idem-pg-"));
  const data = join(dir, "data");
  const asRoot = process.getuid?.() === 0;
  const as = async (command: string, args: string[]) => {
    if (asRoot) await run("runuser", ["-u", "postgres", "--", `${bin}${command}`, ...args]);
    else await run(`${bin}${command}`, args);
  };
  if (asRoot) {
    const { uid, gid } = await run("id", ["-u", "postgres"]).then(async ({ stdout }) => ({
      uid: Number(stdout),
      gid: Number((await run("id", ["-g", "postgres"])).stdout),
    }));
    await chown(dir, uid, gid);
    await chmod(dir, 0o700);
  }
  const port = await freePort();
  await as("initdb", ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off`;
  const start = () =>
    as("pg_ctl", ["-D", data, "-o", options, "-l", join(dir, "log"), "-w", "-t", "30", "start"]);
  const stop = (mode: string) => as("pg_ctl", ["-D", data, "-m", mode, "-w", "stop"]).catch(() => {});
  await start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    owned: true,
    kill: () => stop("immediate"),
    start,
    close: async () => {
      await stop("immediate");
      await rm(dir, { recursive: true, force: true });
    },
  };
}
