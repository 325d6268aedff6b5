import { execFile } from "node:child_process";
import { access, copyFile, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { send } from "../helpers/http.js";
import { type GatewayProcess, spawnServe } from "../helpers/process.js";
import { startUpstream, type TestUpstream } from "../helpers/upstream.js";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("../..", import.meta.url));

let dir: string | undefined;
let upstream: TestUpstream | undefined;
let gw: GatewayProcess | undefined;
afterAll(async () => {
  gw?.proc.kill("SIGKILL");
  await upstream?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

// The final stage of the Dockerfile, without a Docker engine: the packed tarball plus the lock file,
// production dependencies only, no build tools; then `serve` must run from it.
describe("packaged install", () => {
  it("installs from `npm pack` with `npm ci --omit=dev` into a fresh directory and serves", async () => {
    dir = await mkdtemp(join(tmpdir(), "idem-pack-"));
    await run("npm", ["pack", "--ignore-scripts", "--pack-destination", dir], { cwd: ROOT });
    const tarball = (await readdir(dir)).find((f) => f.endsWith(".tgz"));
    expect(tarball).toBeDefined();
    await run("tar", ["-xzf", join(dir, tarball as string), "-C", dir]);
    const app = join(dir, "package");
    // Every file the manifest points at is in the package.
    const manifest = JSON.parse(await readFile(join(app, "package.json"), "utf8")) as {
      main?: string;
      bin: Record<string, string>;
    };
    for (const entry of [manifest.main, ...Object.values(manifest.bin)].filter((e) => e !== undefined))
      await expect(access(join(app, entry))).resolves.toBeUndefined();
    await copyFile(join(ROOT, "package-lock.json"), join(app, "package-lock.json"));
    await run("npm", ["ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund"], { cwd: app });
    const installed = await readdir(join(app, "node_modules"));
    expect(installed).toContain("undici");
    expect(installed).not.toContain("vitest");
    expect(installed).not.toContain("typescript");

    upstream = await startUpstream();
    gw = await spawnServe(
      [
        "--config",
        join(app, "config", "gateway.yaml"),
        "--port",
        "0",
        "--admin-port",
        "0",
        "--upstream",
        upstream.url,
      ],
      {},
      join(app, "dist", "cli.js"),
    );
    const res = await send(`${gw.url}/invoices`, {
      headers: { "x-tenant-id": "t1" },
      body: '{"invoiceNumber":"P-1","transactionId":"T-1"}',
    });
    const retry = await send(`${gw.url}/invoices`, {
      headers: { "x-tenant-id": "t1" },
      body: '{"invoiceNumber":"P-1","transactionId":"T-1"}',
    });
    expect(res.status).toBe(200);
    expect(retry.headers["idempotent-replayed"]).toBe("true");
    expect(upstream.calls).toHaveLength(1);
  }, 180_000);
});
