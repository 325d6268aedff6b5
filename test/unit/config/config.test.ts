import { describe, expect, it } from "vitest";
import {
  cachePredicate,
  parseConfig,
  parseConfigText,
  parseDuration,
  parseSize,
  RouteTable,
} from "../../../src/config/index.js";
import { ConfigError } from "../../../src/errors.js";

const base = { upstream: { url: "http://127.0.0.1:9000" } };

function problems(raw: unknown): string[] {
  try {
    parseConfig(raw);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error("config was accepted");
}

describe("config", () => {
  it("keeps up to 4 MB of log output for a slow reader by default, and refuses less than one chunk", () => {
    expect(parseConfig(base).log.buffer).toBe(4 * 1024 * 1024);
    expect(parseConfig({ ...base, log: { buffer: "64kb" } }).log.buffer).toBe(64 * 1024);
    expect(problems({ ...base, log: { buffer: "1kb" } })).toEqual([
      "log.buffer: expected at least 4kb (one chunk of log lines)",
    ]);
  });

  it("fills every default", () => {
    const c = parseConfig(base);
    expect(c.defaults).toMatchObject({
      methods: ["POST", "PUT", "PATCH", "DELETE"],
      ttl: 86_400_000,
      lockTtl: 10_000,
      concurrent: "wait",
      cache: ["2xx", "4xx"],
      unknownOn: [500, 502, 504],
      maxBodySize: 1024 * 1024,
      onUnknown: "reject",
    });
    const settings = new RouteTable(c).fallback.settings;
    expect(settings.waitTimeoutMs).toBe(25_000);
    expect(settings.key.header).toBe("Idempotency-Key");
    expect(settings.errorBody).toEqual({ template: undefined, contentType: "application/problem+json" });
    expect(c.upstream.timeout).toBe(60_000);
    expect(c.store).toMatchObject({ kind: "memory", failMode: "closed", redis: { prefix: "idem:" } });
  });

  it("derives waitTimeout from callerTimeout, leaving the caller time to hear the answer", () => {
    const waitOf = (callerTimeout: string, waitTimeout?: string) =>
      new RouteTable(
        parseConfig({
          ...base,
          routes: [
            { name: "r", match: { path: "/r" }, callerTimeout, ...(waitTimeout ? { waitTimeout } : {}) },
          ],
        }),
      ).routes[0]?.settings.waitTimeoutMs;
    expect(waitOf("30s")).toBe(25_000);
    expect(waitOf("4s")).toBe(2_000);
    expect(waitOf("30s", "10s")).toBe(10_000);
  });

  it.each([
    [
      { routes: [{ name: "x", match: { path: "/x" }, key: { from: ["bdy:/x"] } }] },
      'routes[0].key.from[0]: unknown source "bdy:/x" (expected header:, body:, form:, query:, path:)',
    ],
    [{ defaults: { ttl: "10 parsecs" } }, 'defaults.ttl: invalid duration "10 parsecs"'],
    [{ defaults: { maxBodySize: "lots" } }, 'defaults.maxBodySize: invalid size "lots"'],
    [
      { routes: [{ name: "x", match: { path: "x" } }] },
      'routes[0].match.path: a path pattern starts with "/"',
    ],
    [
      { routes: [{ name: "x", match: { path: "/x" }, key: { from: ["body:x"] } }] },
      'routes[0].key.from[0]: a JSON pointer starts with "/"',
    ],
    [{ routes: [{ name: "x", match: { path: "/x" }, cache: ["2xy"] }] }, "routes[0].cache[0]"],
    [{ routes: [{ name: "x", match: { path: "/x" }, colour: "red" }] }, "routes[0]: Unrecognized key"],
    [{ defaults: { concurrent: "maybe" } }, "defaults.concurrent"],
    [
      {
        routes: [
          { name: "a", match: { path: "/a" } },
          { name: "a", match: { path: "/b" } },
        ],
      },
      'routes[1].name: duplicate route name "a"',
    ],
  ])("names the path of a bad value (%#)", (raw, expected) => {
    expect(problems({ ...base, ...raw }).join("\n")).toContain(expected);
  });

  it.each([
    [
      { routes: [{ name: "r", match: { path: "/r" }, onUnknown: "reconcile" }] },
      "routes[0].reconcile: required when onUnknown is reconcile",
    ],
    [{ defaults: { onUnknown: "reconcile" } }, "defaults.reconcile: required when onUnknown is reconcile"],
    [
      { defaults: { onUnknown: "reconcile", reconcile: { probe: { path: "/i?n={bdy:/n}" } } } },
      'defaults.reconcile.probe.path: unknown source "bdy:/n"',
    ],
  ])("checks the reconciliation probe (%#)", (raw, expected) => {
    expect(problems({ ...base, ...raw }).join("\n")).toContain(expected);
  });

  it("compiles a probe template into text and sources, with defaults for found and notFound", () => {
    const c = parseConfig({
      ...base,
      defaults: { onUnknown: "reconcile", reconcile: { probe: { path: "/i?n={body:/n}&t={header:X-T}" } } },
    });
    expect(c.defaults.reconcile?.probe.method).toBe("GET");
    expect(c.defaults.reconcile?.found).toEqual([200]);
    expect(c.defaults.reconcile?.notFound).toEqual([404]);
    expect(
      c.defaults.reconcile?.probe.path.template.map((p) => (typeof p === "string" ? p : p.text)),
    ).toEqual(["/i?n=", "body:/n", "&t=", "header:X-T"]);
  });

  it("refuses an admin API on a non-loopback address without a token", () => {
    expect(problems({ ...base, admin: { host: "0.0.0.0" } })).toContain(
      'admin.token: required when the admin API listens on "0.0.0.0", which is not loopback (or set ADMIN_TOKEN)',
    );
    expect(() =>
      parseConfig({ ...base, admin: { host: "0.0.0.0", token: "a-long-enough-token!" } }),
    ).not.toThrow();
    expect(() => parseConfig({ ...base, admin: { host: "0.0.0.0", port: false } })).not.toThrow();
  });

  it("asks for the upstream when none is given", () => {
    expect(problems({})).toContain("upstream: required: set upstream.url, --upstream or UPSTREAM_URL");
  });

  it("reports YAML syntax errors without a stack trace", () => {
    expect(() => parseConfigText("routes: [", "bad.yaml")).toThrow(ConfigError);
  });

  it("lets overrides win over the file", () => {
    const c = parseConfig(base, {
      port: 0,
      upstream: "http://127.0.0.1:1",
      store: "redis",
      redis: "redis://x:1",
    });
    expect(c.listen.port).toBe(0);
    expect(c.upstream.url).toBe("http://127.0.0.1:1");
    expect(c.store.kind).toBe("redis");
    expect(c.store.redis.url).toBe("redis://x:1");
  });

  it.each([
    ["500ms", 500],
    ["10s", 10_000],
    ["5m", 300_000],
    ["24h", 86_400_000],
    ["7d", 604_800_000],
    [250, 250],
    ["ten", undefined],
  ])("parses the duration %s", (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each([
    ["1mb", 1_048_576],
    ["512kb", 524_288],
    ["10b", 10],
    ["1tb", undefined],
  ])("parses the size %s", (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });
});

describe("cache list", () => {
  const cache = cachePredicate(["2xx", "4xx"]);
  it.each([
    [200, true],
    [201, true],
    [404, true],
    [422, true],
    [408, false],
    [409, false],
    [425, false],
    [429, false],
    [500, false],
    [503, false],
    [302, false],
  ])("status %i cached: %s", (status, cached) => {
    expect(cache(status)).toBe(cached);
  });

  it("caches an excluded status when it is listed exactly", () => {
    expect(cachePredicate(["2xx", 409])(409)).toBe(true);
  });
});

describe("durations that would break the lease (path 5)", () => {
  it.each([
    [{ defaults: { lockTtl: 0 } }, "defaults.lockTtl: 0ms is too short"],
    [{ defaults: { lockTtl: "50ms" } }, "defaults.lockTtl: 50ms is too short"],
    [
      { defaults: { lockTtl: "0.5ms" } },
      'defaults.lockTtl: invalid duration "0.5ms" (expected whole milliseconds',
    ],
    [{ defaults: { lockTtl: 1.5 } }, "defaults.lockTtl: invalid duration"],
    [{ defaults: { ttl: 0 } }, "defaults.ttl: 0ms is too short to protect a retry"],
    [{ defaults: { ttl: "2s", lockTtl: "10s" } }, "defaults.ttl: 2s is shorter than lockTtl 10s"],
    [
      { defaults: { waitTimeout: 0 } },
      "defaults.waitTimeout: must be longer than 0 (to answer duplicates 409 at once, set concurrent: reject)",
    ],
    [{ upstream: { url: "http://127.0.0.1:9000", timeout: 0 } }, "upstream.timeout: must be longer than 0"],
    [
      { defaults: { ttl: "30s" } },
      "defaults.ttl: 30s must be longer than the settle time (upstream.timeout, 1m)",
    ],
    [
      { routes: [{ name: "r", match: { path: "/r" }, lockTtl: "10ms" }] },
      "routes[0].lockTtl: 10ms is too short",
    ],
    [
      {
        routes: [
          {
            name: "r",
            match: { path: "/r" },
            onUnknown: "reconcile",
            reconcile: { probe: { path: "/p" }, settle: "2d" },
          },
        ],
      },
      "defaults.ttl: 1d must be longer than the settle time (routes[0].reconcile.settle, 2d)",
    ],
  ])("refuses %j, naming the path", (input, message) => {
    expect(problems({ ...base, ...input }).join("\n")).toContain(message);
  });

  it("says a problem of the defaults once, not again for every route that inherits it", () => {
    const found = problems({
      ...base,
      defaults: { lockTtl: 0 },
      routes: [
        { name: "a", match: { path: "/a" } },
        { name: "b", match: { path: "/b" } },
      ],
    });
    expect(found.filter((p) => p.includes("lockTtl"))).toEqual([expect.stringMatching(/^defaults\.lockTtl/)]);
  });

  it("accepts whole milliseconds given with a fraction of a larger unit", () => {
    expect(parseConfig({ ...base, defaults: { lockTtl: "1.5s" } }).defaults.lockTtl).toBe(1_500);
  });
});

describe("route table", () => {
  const table = new RouteTable(
    parseConfig({
      ...base,
      routes: [
        { name: "cb", match: { method: "POST", path: "/callbacks/:robot" } },
        { name: "files", match: { path: "/files/*" }, protect: false },
        { name: "any-inv", match: { path: "/invoices" } },
        { name: "later", match: { path: "/invoices" } },
      ],
    }),
  );

  it("matches named params and decodes them", () => {
    const m = table.match("POST", "/callbacks/robot%2042");
    expect(m.route.name).toBe("cb");
    expect(m.params).toEqual({ robot: "robot 42" });
  });

  it("skips a route whose method does not match", () => {
    expect(table.match("GET", "/callbacks/r1").route.fallback).toBe(true);
  });

  it("lets the first match win", () => {
    expect(table.match("PUT", "/invoices").route.name).toBe("any-inv");
  });

  it("matches a trailing wildcard", () => {
    expect(table.match("GET", "/files/a/b.txt").params).toEqual({ "*": "a/b.txt" });
  });

  it("does not treat pattern characters as regex", () => {
    const t = new RouteTable(parseConfig({ ...base, routes: [{ name: "dot", match: { path: "/a.b" } }] }));
    expect(t.match("POST", "/axb").route.fallback).toBe(true);
    expect(t.match("POST", "/a.b").route.name).toBe("dot");
  });

  it("ignores case and a trailing slash by default, and keeps parameters as sent", () => {
    const t = new RouteTable(
      parseConfig({ ...base, routes: [{ name: "cb", match: { path: "/Callbacks/:robot/" } }] }),
    );
    expect(t.match("POST", "/callbacks/RoboA").params).toEqual({ robot: "RoboA" });
    expect(t.match("POST", "/CALLBACKS/RoboA/").route.name).toBe("cb");
  });

  it("matches case and trailing slash exactly when the route asks", () => {
    const t = new RouteTable(
      parseConfig({
        ...base,
        routes: [{ name: "x", match: { path: "/invoices", caseSensitive: true, trailingSlash: "strict" } }],
      }),
    );
    expect(t.match("POST", "/invoices").route.name).toBe("x");
    expect(t.match("POST", "/Invoices").route.fallback).toBe(true);
    expect(t.match("POST", "/invoices/").route.fallback).toBe(true);
  });

  it("gives unmatched requests the fallback route, which derives no keys", () => {
    const t = new RouteTable(
      parseConfig({ ...base, defaults: { key: { from: ["body:/id"], required: true } } }),
    );
    expect(t.fallback.settings.key).toMatchObject({ from: [], required: false });
  });
});
