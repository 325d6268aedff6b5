import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { configWarnings, parseConfig, parseConfigText } from "../../../src/config/index.js";

const base = { upstream: { url: "http://127.0.0.1:9000" } };

describe("config warnings", () => {
  it("warns about a derived-key route without scope, naming the route and its fields", () => {
    const w = configWarnings(
      parseConfig({ ...base, routes: [{ name: "inv", match: { path: "/i" }, key: { from: ["body:/n"] } }] }),
    );
    expect(w).toHaveLength(1);
    expect(w[0]).toContain('routes[0] "inv": keys derived from business fields (body:/n) and no scope');
  });

  it("is quiet for a scoped derived-key route, a header-only route and a pass-through route", () => {
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

  it("finds the shipped config and every example valid and free of warnings", async () => {
    const root = fileURLToPath(new URL("../../../config/", import.meta.url));
    const files = [
      join(root, "gateway.yaml"),
      ...(await readdir(join(root, "examples"))).map((f) => join(root, "examples", f)),
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
