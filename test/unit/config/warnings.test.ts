import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { configWarnings, parseConfig, parseConfigText } from "../../../src/config/index.js";

const base = { upstream: { url: "http://127.0.0.1:9000" } };

describe("config warnings", () => {
  it("is quiet by default: keys are scoped by the caller's Authorization", () => {
    const w = configWarnings(
      parseConfig({
        ...base,
        routes: [
          { name: "a", match: { path: "/a" }, key: { from: ["body:/n"] }, scope: ["header:T"] },
          { name: "b", match: { path: "/b" } },
          { name: "c", match: { path: "/c" }, protect: false, key: { from: ["body:/n"] } },
        ],
      }),
    );
    expect(w).toEqual([]);
  });

  it("warns about keys that no identity scopes, naming the route and what callers share", () => {
    const w = configWarnings(
      parseConfig({
        ...base,
        defaults: { identity: [] },
        routes: [{ name: "inv", match: { path: "/i" }, key: { from: ["body:/n"] }, scope: ["header:T"] }],
      }),
    );
    expect(w).toEqual([
      expect.stringContaining("defaults: keys are not scoped by the caller's identity"),
      expect.stringContaining(
        'routes[0] "inv": keys are not scoped by the caller\'s identity (identity is empty and the scope is set by the client): callers sending the same body:/n',
      ),
    ]);
  });

  it("warns when a route's timeouts do not fit the callerTimeout it declares", () => {
    const warn = (route: Record<string, unknown>, timeout = "60s") =>
      configWarnings(
        parseConfig({
          upstream: { ...base.upstream, timeout },
          routes: [{ name: "cb", match: { path: "/cb" }, callerTimeout: "30s", ...route }],
        }),
      );
    expect(warn({})).toEqual([]);
    expect(warn({ waitTimeout: "30s" })).toEqual([
      expect.stringContaining('routes[0] "cb".waitTimeout: 30s is not below callerTimeout 30s'),
    ]);
    expect(warn({ concurrent: "reject" })).toEqual([
      expect.stringContaining('routes[0] "cb".concurrent: reject answers a retry 409 at once'),
    ]);
    expect(warn({}, "20s")).toEqual([
      expect.stringContaining('upstream.timeout: 20s is not longer than routes[0] "cb".callerTimeout 30s'),
    ]);
  });

  it("warns when unknownOn leaves out a status a backend may answer after committing", () => {
    const warn = (route: Record<string, unknown>) =>
      configWarnings(parseConfig({ ...base, routes: [{ name: "r", match: { path: "/r" }, ...route }] }));
    expect(warn({ unknownOn: [] })).toEqual([
      expect.stringContaining('routes[0] "r".unknownOn: leaves out 500, 502, 504: a backend that commits'),
    ]);
    expect(warn({ unknownOn: [500, 504] })).toEqual([expect.stringContaining("leaves out 502:")]);
    // Stored and replayed is safe too.
    expect(warn({ unknownOn: [], cache: ["2xx", "4xx", "5xx"] })).toEqual([]);
  });

  it("accepts a scope header that a trusted proxy sets in place of an identity", () => {
    const w = configWarnings(
      parseConfig({
        ...base,
        trustProxy: { addresses: ["10.0.0.0/8"], headers: ["X-Tenant-Id"] },
        defaults: { identity: [], scope: ["header:X-Tenant-Id"] },
      }),
    );
    expect(w).toEqual([]);
  });

  it("warns about an identity header the client sets, and trusted headers without trusted peers", () => {
    const w = configWarnings(
      parseConfig({
        ...base,
        trustProxy: { headers: ["X-Cert"] },
        defaults: { identity: ["header:X-Client"] },
      }),
    );
    expect(w).toEqual([
      expect.stringContaining("trustProxy.headers: no trustProxy.addresses"),
      expect.stringContaining("defaults.identity: header:X-Client is set by the client"),
    ]);
  });

  it("refuses an identity read from anything but a header, and a malformed proxy address", () => {
    expect(() => parseConfig({ ...base, defaults: { identity: ["body:/user"] } })).toThrow(
      /defaults.identity\[0\]: an identity is read from a header/,
    );
    expect(() => parseConfig({ ...base, trustProxy: { addresses: ["10.0.0.0/33"] } })).toThrow(
      /trustProxy.addresses\[0\]/,
    );
  });

  it("warns about failMode: open, onUnknown: retry and a route that can never have a key", () => {
    const w = configWarnings(
      parseConfig({
        ...base,
        store: { failMode: "open" },
        routes: [
          { name: "r", match: { path: "/r" }, onUnknown: "retry" },
          { name: "k", match: { path: "/k" }, key: { header: false } },
        ],
      }),
    );
    expect(w.join("\n")).toContain("store.failMode: open");
    expect(w.join("\n")).toContain('routes[0] "r".onUnknown: retry');
    expect(w.join("\n")).toContain('routes[1] "k": key.header is false and there is no key.from');
  });

  it("warns about a replicated Redis whose failover can lose a begin, unless replicas is set", () => {
    const warned = (redis: Record<string, unknown>) =>
      configWarnings(parseConfig({ ...base, store: { kind: "redis", redis } })).join("\n");
    const lossy = /store\.redis\.replicas is 0: a failover can lose/;
    expect(warned({ cluster: ["10.0.0.1:7000"] })).toMatch(lossy);
    expect(warned({ sentinel: { nodes: ["10.0.0.1:26379"], name: "m" } })).toMatch(lossy);
    expect(warned({ sentinel: { nodes: ["10.0.0.1:26379"], name: "m" }, replicas: 1 })).not.toMatch(lossy);
    expect(warned({ url: "redis://10.0.0.1:6379" })).not.toMatch(lossy);
  });

  it("refuses a Redis config that names two topologies, and a node that is not host:port", () => {
    expect(() =>
      parseConfig({
        ...base,
        store: { kind: "redis", redis: { cluster: ["a:1"], sentinel: { nodes: ["b:2"], name: "m" } } },
      }),
    ).toThrow(/store\.redis: choose one of cluster and sentinel/);
    expect(() => parseConfig({ ...base, store: { kind: "redis", redis: { cluster: ["no-port"] } } })).toThrow(
      /store\.redis\.cluster\[0\]: expected host:port/,
    );
    expect(() => parseConfig({ ...base, store: { kind: "redis", redis: { url: "http://x" } } })).toThrow(
      /store\.redis\.url: expected a redis:\/\/ or rediss:\/\/ URL/,
    );
  });

  it("finds the shipped config and every example valid and free of warnings", async () => {
    const root = fileURLToPath(new URL("../../../config/", import.meta.url));
    const files = [
      join(root, "gateway.yaml"),
      ...(await readdir(join(root, "examples")))
        .filter((f) => f.endsWith(".yaml"))
        .map((f) => join(root, "examples", f)),
    ];
    expect(files.length).toBeGreaterThanOrEqual(4);
    for (const file of files) {
      // Examples that open the admin API beyond loopback expect ADMIN_TOKEN from the deployment.
      const config = parseConfigText(await readFile(file, "utf8"), file, {
        adminToken: "a-deployment-secret-token",
      });
      expect(configWarnings(config), file).toEqual([]);
    }
  });
});

describe("reconcile probe warnings", () => {
  const route = (path: string) => ({
    name: "inv",
    match: { path: "/i" },
    key: { from: ["body:/invoiceNumber", "body:/transactionId"] },
    scope: ["header:X-Tenant-Id"],
    onUnknown: "reconcile",
    reconcile: { probe: { path } },
  });

  it("warns when the probe does not name every key field, naming the ones missing", () => {
    const w = configWarnings(
      parseConfig({ ...base, routes: [route("/invoices?number={body:/invoiceNumber}")] }),
    );
    expect(w).toEqual([
      expect.stringContaining('routes[0] "inv".reconcile.probe.path: does not name body:/transactionId'),
    ]);
  });

  it("is quiet when the probe names every key field", () => {
    const w = configWarnings(
      parseConfig({
        ...base,
        routes: [route("/invoices/{body:/invoiceNumber}?tx={body:/transactionId}")],
      }),
    );
    expect(w).toEqual([]);
  });
});
