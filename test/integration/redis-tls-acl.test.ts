/**
 * Redis over TLS with a certificate the test makes (openssl), as an ACL user that may not run CONFIG
 * or INFO (as on many managed services); and check-config --connect against it and against servers
 * that lose or evict records.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestGateway } from "../helpers/gateway.js";
import { send } from "../helpers/http.js";
import { runCli } from "../helpers/process.js";
import { freePort, startRedis, type TestRedis } from "../helpers/redis.js";
import { closeAfterEach } from "../helpers/teardown.js";
import { startUpstream } from "../helpers/upstream.js";

const run = promisify(execFile);
const use = closeAfterEach();
let dir: string;
let tlsRedis: TestRedis;
let tlsPort: number;

/** A CA, and a server certificate it signed for localhost and 127.0.0.1. */
async function makeCertificates(into: string): Promise<void> {
  const at = (f: string) => join(into, f);
  await run(
    "openssl",
    ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test ca"].concat([
      "-keyout",
      at("ca.key"),
      "-out",
      at("ca.crt"),
    ]),
  );
  await run(
    "openssl",
    ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost"].concat([
      "-keyout",
      at("server.key"),
      "-out",
      at("server.csr"),
    ]),
  );
  await writeFile(at("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  await run(
    "openssl",
    ["x509", "-req", "-days", "1", "-in", at("server.csr"), "-CA", at("ca.crt")].concat([
      "-CAkey",
      at("ca.key"),
      "-CAcreateserial",
      "-out",
      at("server.crt"),
      "-extfile",
      at("san.ext"),
    ]),
  );
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "idem-tls-"));
  await makeCertificates(dir);
  tlsPort = await freePort();
  tlsRedis = await startRedis({
    own: true,
    args: [
      "--port",
      "0",
      "--tls-port",
      String(tlsPort),
      "--tls-cert-file",
      join(dir, "server.crt"),
      "--tls-key-file",
      join(dir, "server.key"),
      "--tls-ca-cert-file",
      join(dir, "ca.crt"),
      "--tls-auth-clients",
      "no",
      // The default user is off; the gateway's user has what the README asks for (its own keys and
      // channels, the command groups it uses, and TIME for the scripts), and no CONFIG or INFO.
      ...["--user", "default", "off"],
      ...[
        "--user",
        "gateway",
        "on",
        ">a-long-gateway-password",
        "~tls:*",
        "&tls:*",
        "+@read",
        "+@write",
        "+@scripting",
        "+@pubsub",
        "+@connection",
        "+time",
        "-info",
        "-config",
      ],
    ],
  });
}, 60_000);

afterAll(async () => {
  await tlsRedis?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const tlsUrl = (password = "a-long-gateway-password") => `rediss://gateway:${password}@localhost:${tlsPort}`;

describe("redis over TLS as an ACL user", () => {
  it("protects requests, and /readyz says CONFIG cannot be read rather than failing", async () => {
    const upstream = use(await startUpstream());
    const gateway = use(
      await startTestGateway({
        upstream: upstream.url,
        store: { kind: "redis", redis: { url: tlsUrl(), tls: { ca: join(dir, "ca.crt") }, prefix: "tls:" } },
      }),
    );
    const post = () => send(`${gateway.url}/invoices`, { headers: { "idempotency-key": "t-1" }, body: "{}" });
    expect((await post()).status).toBe(200);
    expect((await post()).headers["idempotent-replayed"]).toBe("true");
    expect(upstream.calls).toHaveLength(1);
    const ready = await fetch(`${gateway.adminUrl}/readyz`);
    const body = (await ready.json()) as { store: { warnings: string[] } };
    expect(ready.status).toBe(200);
    expect(body.store.warnings.join("\n")).toMatch(/cannot read CONFIG \(NOPERM/);
  });

  it("check-config --connect says reachable, and what it could not check", async () => {
    const config = join(dir, "ok.yaml");
    await writeFile(
      config,
      `upstream: { url: "http://127.0.0.1:1" }\nstore: { kind: redis, redis: { url: "${tlsUrl()}", tls: { ca: "${join(dir, "ca.crt")}" }, prefix: "tls:" } }\n`,
    );
    const out = await runCli(["check-config", "--config", config, "--connect"]);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout).toContain(`store: redis rediss://localhost:${tlsPort}: reachable`);
    expect(out.stdout).toMatch(/warning: redis localhost:\d+: cannot read CONFIG \(NOPERM/);
    expect(out.stdout).not.toContain("a-long-gateway-password");
  });

  it("check-config --connect fails in one line on a wrong password, and on a certificate it does not trust", async () => {
    for (const [name, redis] of [
      ["wrong-password", `{ url: "${tlsUrl("wrong-password-123")}", tls: { ca: "${join(dir, "ca.crt")}" } }`],
      ["untrusted", `{ url: "${tlsUrl()}" }`],
    ] as const) {
      const config = join(dir, `${name}.yaml`);
      await writeFile(
        config,
        `upstream: { url: "http://127.0.0.1:1" }\nstore: { kind: redis, redis: ${redis} }\n`,
      );
      const out = await runCli(["check-config", "--config", config, "--connect"]);
      expect(out.code, name).toBe(2);
      const lines = out.stderr.trim().split("\n");
      expect(lines, name).toHaveLength(1);
      expect(lines[0], name).toMatch(
        /^idempotency-gateway: store: cannot reach redis \(rediss:\/\/localhost:\d+\): /,
      );
      expect(out.stderr).not.toContain("wrong-password-123");
    }
  }, 30_000);
});

describe("check-config --connect on servers that would lose records", () => {
  it("names appendonly and maxmemory-policy, and passes a server with AOF and noeviction", async () => {
    const loose = use(await startRedis({ own: true, args: ["--maxmemory-policy", "volatile-lru"] }));
    const safe = use(
      await startRedis({ own: true, args: ["--appendonly", "yes", "--maxmemory-policy", "noeviction"] }),
    );
    const check = async (url: string) => {
      const config = join(dir, `connect-${new URL(url).port}.yaml`);
      await writeFile(
        config,
        `upstream: { url: "http://127.0.0.1:1" }\nstore: { kind: redis, redis: { url: "${url}" } }\n`,
      );
      return runCli(["check-config", "--config", config, "--connect"]);
    };
    const bad = await check(loose.url);
    expect(bad.code).toBe(0);
    expect(bad.stdout).toMatch(/warning: redis 127\.0\.0\.1:\d+: no persistence \(appendonly no, save ""\)/);
    expect(bad.stdout).toMatch(
      /warning: redis 127\.0\.0\.1:\d+: maxmemory-policy volatile-lru may evict records/,
    );
    const good = await check(safe.url);
    expect(good.code).toBe(0);
    expect(good.stdout).toContain("reachable");
    expect(good.stdout).not.toContain("warning: redis");
  });
});
