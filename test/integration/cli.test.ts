import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { send } from "../helpers/http.js";
import { type GatewayProcess, runCli, spawnServe } from "../helpers/process.js";
import { gate, startUpstream, type TestUpstream } from "../helpers/upstream.js";

async function tempFile(name: string, text: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "idem-cli-"));
  const file = join(dir, name);
  await writeFile(file, text);
  return file;
}

let upstream: TestUpstream | undefined;
let gw: GatewayProcess | undefined;
afterEach(async () => {
  if (gw && gw.proc.exitCode === null && gw.proc.signalCode === null) {
    gw.proc.kill("SIGKILL");
    await gw.exited;
  }
  await upstream?.close();
  gw = undefined;
  upstream = undefined;
});

describe("check-config", () => {
  it("exits non-zero on an invalid file, naming the path, with no stack trace", async () => {
    const file = await tempFile(
      "bad.yaml",
      "upstream: { url: http://127.0.0.1:9 }\nroutes:\n  - name: a\n    match: { path: /a }\n  - name: b\n    match: { path: /b }\n    key: { from: [bdy:/x] }\n",
    );
    const r = await runCli(["check-config", "--config", file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('routes[1].key.from[0]: unknown source "bdy:/x"');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it("exits non-zero with one line for a file that does not exist", async () => {
    const r = await runCli(["check-config", "--config", "/nonexistent/gw.yaml"]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(2);
    expect(r.stderr).toContain("cannot read (ENOENT)");
  });

  it("accepts the embedded default config and prints its routes", async () => {
    const r = await runCli(["check-config"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("create-invoice: POST /invoices");
  });
});

describe("serve", () => {
  it("takes the upstream and port from the command line and the environment", async () => {
    upstream = await startUpstream();
    gw = await spawnServe(["--port", "0"], { UPSTREAM_URL: upstream.url });
    const res = await send(`${gw.url}/hello`, { method: "GET" });
    expect(res.status).toBe(200);
    expect(upstream.calls[0]?.url).toBe("/hello");
  });

  it("refuses a bad port flag with one clear line", async () => {
    const r = await runCli(["serve", "--port", "http"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("expected a port from 0 to 65535");
  });

  it("on SIGTERM finishes the attempt under way and answers it, then exits 0", async () => {
    const hold = gate();
    upstream = await startUpstream(async (_c, res) => {
      await hold.promise;
      res.end("finished during drain");
    });
    gw = await spawnServe(["--port", "0", "--upstream", upstream.url]);
    const pending = send(`${gw.url}/invoices`, {
      headers: { "idempotency-key": "drain-1", "x-tenant-id": "t" },
      body: '{"invoiceNumber":"A","transactionId":"B"}',
    });
    await upstream.called(1);
    gw.proc.kill("SIGTERM");
    await gw.waitForOutput("SIGTERM: draining");
    hold.open();
    const res = await pending;
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe("finished during drain");
    expect(await gw.exited).toBe(0);
  });
});
