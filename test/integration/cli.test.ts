import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Pool, request } from "undici";
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

describe("check-config --explain", () => {
  const example = (name: string) => new URL(`../../config/examples/${name}`, import.meta.url).pathname;

  it("prints the route, the key material, the scope, the fingerprint parts and the stored key", async () => {
    const body = await tempFile(
      "b.json",
      '{"invoiceNumber":"INV-9","transactionID":"TX-9","amount":12,"sentAt":"now"}',
    );
    const r = await runCli([
      "check-config",
      "--config",
      example("rpa-callback.yaml"),
      "--explain",
      "POST",
      "/callbacks/robot-7",
      "--body",
      body,
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(
      "POST /callbacks/robot-7 -> route robot-callback (/callbacks/:robot), protected",
    );
    expect(r.stdout).toContain('params: {"robot":"robot-7"}');
    expect(r.stdout).toContain(
      'key (derived):\n    body:/invoiceNumber = "INV-9"\n    body:/transactionID = "TX-9"',
    );
    expect(r.stdout).toContain('scope:\n    path:robot = "robot-7"');
    expect(r.stdout).toContain("body:/amount = 12");
    expect(r.stdout).toMatch(/stored key: [A-Za-z0-9_-]{43}/);
  });

  it("prints the exact 400 a request would get", async () => {
    const body = await tempFile("b.json", '{"amount":12}');
    const r = await runCli([
      "check-config",
      "--config",
      example("rpa-callback.yaml"),
      "--explain",
      "POST",
      "/callbacks/robot-7",
      "--body",
      body,
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("answer: 400 MISSING_KEY: body:/invoiceNumber is missing");
    // In the route's error shape, as the caller would get it.
    expect(r.stdout).toContain(
      '{"error":"body:/invoiceNumber is missing","code":"MISSING_KEY","retryable":false',
    );
  });

  it("names the JSON parse error of a body a rule needs", async () => {
    const body = await tempFile("b.json", "{oops");
    const r = await runCli([
      "check-config",
      "--config",
      example("rpa-callback.yaml"),
      "--explain",
      "POST",
      "/callbacks/r",
      "--body",
      body,
    ]);
    expect(r.stdout).toContain("answer: 400 INVALID_BODY: body is not valid JSON");
  });

  it("shows a header key with its scope, and a pass-through route", async () => {
    const withKey = await runCli([
      "check-config",
      "--config",
      example("header-only.yaml"),
      "--explain",
      "POST",
      "/v1/payments",
      "--header",
      "Idempotency-Key: pay-1",
      "--header",
      "Authorization: Bearer abc",
    ]);
    expect(withKey.stdout).toContain('key (header):\n    header:Idempotency-Key = "pay-1"');
    expect(withKey.stdout).toContain('header:Authorization = "Bearer abc"');
    const passThrough = await runCli([
      "check-config",
      "--config",
      example("header-only.yaml"),
      "--explain",
      "GET",
      "/v1/payments/p1",
    ]);
    expect(passThrough.stdout).toContain("-> route status (/v1/*), pass-through");
  });

  it("warns about a route whose keys no identity scopes", async () => {
    const file = await tempFile(
      "noidentity.yaml",
      "upstream: { url: http://127.0.0.1:9 }\nroutes:\n  - name: inv\n    match: { path: /i }\n    key: { from: [body:/n] }\n    identity: []\n",
    );
    const r = await runCli(["check-config", "--config", file]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(
      'warning: routes[0] "inv": keys are not scoped by the caller\'s identity (identity is empty): callers sending the same body:/n share one stored answer',
    );
  });

  it("refuses --explain without METHOD and PATH", async () => {
    const r = await runCli(["check-config", "--explain", "POST"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--explain takes METHOD PATH");
  });
});

describe("inspect", () => {
  it("shows a key's record from the running gateway, and exits 1 for a key it never saw", async () => {
    upstream = await startUpstream((_c, res) => {
      res.writeHead(201);
      res.end("created");
    });
    gw = await spawnServe(["--port", "0", "--admin-port", "0", "--upstream", upstream.url]);
    const adminUrl = /admin (http:\/\/[^\s)]+)/.exec(gw.output())?.[1] as string;
    await send(`${gw.url}/invoices`, {
      headers: { "x-tenant-id": "acme" },
      body: '{"invoiceNumber":"INV-4711","transactionId":"T-1"}',
    });
    const found = await runCli([
      "inspect",
      "--admin",
      adminUrl,
      "create-invoice",
      "INV-4711",
      "T-1",
      "--scope",
      "acme",
    ]);
    expect(found.code).toBe(0);
    expect(JSON.parse(found.stdout)).toMatchObject({
      route: "create-invoice",
      state: "completed",
      response: { status: 201 },
    });
    const missing = await runCli([
      "inspect",
      "--admin",
      adminUrl,
      "create-invoice",
      "INV-4712",
      "T-1",
      "--scope",
      "acme",
    ]);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim()).toBe(
      "idempotency-gateway: no record for this key (never seen, expired or purged)",
    );
  });

  it("says in one line when the admin API cannot be reached", async () => {
    const r = await runCli(["inspect", "--admin", "http://127.0.0.1:9", "create-invoice", "A", "B"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("cannot reach the admin API at http://127.0.0.1:9");
  });
});

describe("serve", () => {
  it("takes the upstream and port from the command line and the environment", async () => {
    upstream = await startUpstream();
    gw = await spawnServe(["--port", "0", "--admin-port", "0"], { UPSTREAM_URL: upstream.url });
    const res = await send(`${gw.url}/hello`, { method: "GET" });
    expect(res.status).toBe(200);
    expect(upstream.calls[0]?.url).toBe("/hello");
  });

  it("loads no client or tool that the gateway it runs does not use", async () => {
    // Each would be resident for the process's life: the PostgreSQL and Redis clients, and the
    // storm tool's histograms and progress bar, are some 7 to 15 MB of RSS apiece.
    const loaded = join(await mkdtemp(join(tmpdir(), "idem-cli-")), "packages.txt");
    const hook = fileURLToPath(new URL("../helpers/loaded-packages.mjs", import.meta.url));
    upstream = await startUpstream();
    gw = await spawnServe(["--port", "0", "--admin-port", "0"], {
      UPSTREAM_URL: upstream.url,
      NODE_OPTIONS: `--import=${pathToFileURL(hook).href}`,
      LOADED_PACKAGES: loaded,
    });
    const res = await send(`${gw.url}/invoices`, {
      headers: { "x-tenant-id": "t1" },
      body: '{"invoiceNumber":"L-1","transactionId":"T-1"}',
    });
    expect(res.status).toBe(200);
    const packages = new Set((await readFile(loaded, "utf8")).split("\n"));
    expect(packages).toContain("undici");
    for (const unused of ["pg", "ioredis", "hdr-histogram-js", "cli-progress"])
      expect(packages).not.toContain(unused);
  });

  it("compiles undici's HTTP parser before it listens, not at the first upstream exchange", async () => {
    // Compiled at the first exchange, it delayed that request and raised the peak memory of the
    // thousands of duplicates arriving with it.
    const hook = fileURLToPath(new URL("../helpers/wasm-compiles.mjs", import.meta.url));
    upstream = await startUpstream();
    gw = await spawnServe(["--port", "0", "--admin-port", "0"], {
      UPSTREAM_URL: upstream.url,
      NODE_OPTIONS: `--import=${pathToFileURL(hook).href}`,
    });
    const compiles = () => gw?.output().split("wasm module compiled").length ?? 0;
    const before = compiles();
    expect(before).toBeGreaterThan(1);
    expect(gw.output().indexOf("wasm module compiled")).toBeLessThan(gw.output().indexOf("listening on"));
    const res = await send(`${gw.url}/hello`, { method: "GET" });
    expect(res.status).toBe(200);
    expect(upstream.calls).toHaveLength(1);
    expect(compiles()).toBe(before);
  });

  it("refuses a bad port flag with one clear line", async () => {
    const r = await runCli(["serve", "--port", "http"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("expected a port from 0 to 65535");
  });

  it("says in one line which setting to change when its port or the admin port is in use", async () => {
    upstream = await startUpstream();
    const busy = upstream.port;
    const main = await runCli([
      "serve",
      "--port",
      String(busy),
      "--admin-port",
      "0",
      "--upstream",
      upstream.url,
    ]);
    expect(main.code).toBe(2);
    expect(main.stderr).toBe(
      `idempotency-gateway: port ${busy} on 127.0.0.1 is in use: choose another with listen.port, --port or PORT\n`,
    );
    const admin = await runCli([
      "serve",
      "--port",
      "0",
      "--admin-port",
      String(busy),
      "--upstream",
      upstream.url,
    ]);
    expect(admin.code).toBe(2);
    expect(admin.stderr).toBe(
      `idempotency-gateway: admin port ${busy} on 127.0.0.1 is in use: choose another with admin.port, --admin-port or ADMIN_PORT (false turns it off)\n`,
    );
  });

  it("on SIGTERM finishes the attempt under way and answers it, then exits 0", async () => {
    const hold = gate();
    upstream = await startUpstream(async (_c, res) => {
      await hold.promise;
      res.end("finished during drain");
    });
    gw = await spawnServe(["--port", "0", "--admin-port", "0", "--upstream", upstream.url]);
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

describe("client connections", () => {
  /** A keep-alive connection that has had one answer: the gateway has accepted it. */
  async function openAnswered(url: string): Promise<Socket> {
    const { hostname, port } = new URL(url);
    const socket = connect({ host: hostname, port: Number(port) });
    const answered = new Promise<string>((resolve, reject) => {
      socket.once("data", (c: Buffer) => resolve(c.toString("latin1")));
      socket.once("error", reject);
      socket.once("close", () => resolve(""));
    });
    socket.write("GET /ping HTTP/1.1\r\nHost: x\r\n\r\n");
    const answer = await answered;
    if (!answer.startsWith("HTTP/1.1 200")) throw new Error(`no answer on a new connection: ${answer}`);
    return socket;
  }

  /** What a new connection gets for a request: "" when it is closed on arrival. */
  function firstBytes(url: string): Promise<string> {
    const { hostname, port } = new URL(url);
    return new Promise((resolve) => {
      const socket = connect({ host: hostname, port: Number(port) });
      let got = "";
      socket.on("data", (c: Buffer) => {
        got += c.toString("latin1");
        socket.destroy();
      });
      socket.on("error", () => resolve(got));
      socket.on("close", () => resolve(got));
      socket.write("GET /ping HTTP/1.1\r\nHost: x\r\n\r\n");
    });
  }

  it("by default keep descriptors for the upstream under the open-file limit, and say so", async () => {
    upstream = await startUpstream();
    const file = await tempFile(
      "gw.yaml",
      `upstream: { url: "${upstream.url}", connections: 8 }\nadmin: { port: false }\nlisten: { port: 0 }\n`,
    );
    // 512 open files, less 8 upstream connections and the 256 kept back: 248 clients.
    gw = await spawnServe(["--config", file], {}, undefined, ["prlimit", "--nofile=512"]);
    expect(gw.output()).toContain("auto comes to 248 client connections under an open-file limit of 512");
    const clients: Socket[] = [];
    try {
      for (let i = 0; i < 248; i++) clients.push(await openAnswered(gw.url));
      expect(await firstBytes(gw.url)).toBe("");
      // The connections it holds still reach the upstream, which a 512th descriptor in use would stop.
      const again = new Promise<string>((resolve) =>
        clients[0]?.once("data", (c: Buffer) => resolve(c.toString())),
      );
      clients[0]?.write("POST /invoices HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
      expect(await again).toMatch(/^HTTP\/1\.1 200/);
    } finally {
      for (const c of clients) c.destroy();
    }
    // With them gone, a new connection is taken again.
    await expect.poll(() => firstBytes(gw?.url as string)).toMatch(/^HTTP\/1\.1 200/);
  });

  it("check-config shows what auto comes to", async () => {
    const file = await tempFile("gw.yaml", "upstream: { url: http://127.0.0.1:9, connections: 8 }\n");
    const r = await runCli(["check-config", "--config", file]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(
      /listen\.maxConnections: \d+ \(auto: open-file limit \d+, less 8 upstream connections and 256 kept for the store, logs and admin\)/,
    );
  });
});

describe("standard output", () => {
  it("keeps answering while nobody reads the log, counts what it dropped, and says so once read", async () => {
    upstream = await startUpstream();
    const config = await tempFile(
      "gateway.yaml",
      `upstream: { url: "${upstream.url}" }\nstore: { kind: memory }\nlog: { buffer: 16kb }\n`,
    );
    gw = await spawnServe(["--config", config, "--port", "0", "--admin-port", "0"]);
    const admin = /admin (http:\/\/[^\s)]+)/.exec(gw.output())?.[1];
    expect(admin).toBeDefined();
    // From here on nobody reads: the pipe and this end's buffer hold a few hundred lines at most.
    gw.proc.stdout?.pause();
    // 2,000 protected requests, an access line each (about 250 bytes): several times what fits.
    const pool = new Pool(gw.url, { connections: 20, headersTimeout: 10_000, bodyTimeout: 10_000 });
    const statuses: number[] = [];
    try {
      for (let batch = 0; batch < 100; batch++) {
        const sent = Array.from({ length: 20 }, async (_, i) => {
          const r = await pool.request({
            method: "POST",
            path: "/invoices",
            headers: { "idempotency-key": `log-${batch}-${i}`, "content-type": "application/json" },
            body: "{}",
          });
          await r.body.dump();
          return r.statusCode;
        });
        statuses.push(...(await Promise.all(sent)));
      }
    } finally {
      await pool.close();
    }
    expect(statuses).toHaveLength(2_000);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    const metrics = await (await request(`${admin}/metrics`)).body.text();
    const dropped = Number(/^idempotency_gateway_log_lines_dropped_total (\d+)$/m.exec(metrics)?.[1]);
    expect(dropped).toBeGreaterThan(0);
    // Once read again, the log catches up and says how many lines it dropped.
    gw.proc.stdout?.resume();
    await gw.waitForOutput('"droppedLines":');
    const warning = gw
      .output()
      .split("\n")
      .find((l) => l.includes('"droppedLines":'));
    expect(JSON.parse(warning as string)).toMatchObject({ level: 40, droppedLines: dropped });
  });
});
