import type { Config } from "./schema.js";

/**
 * Settings that are legal but risky, said once at start (Caddy's Provision() habit) and by
 * check-config. Each names where it is in the file.
 */
export function configWarnings(config: Config): string[] {
  const out: string[] = [];
  if (config.store.failMode === "open") {
    out.push(
      "store.failMode: open: while the store is unreachable, requests are forwarded unprotected (duplicates possible)",
    );
  }
  if (config.defaults.onUnknown === "retry") {
    out.push(
      "defaults.onUnknown: retry: a retry after an unknown outcome is forwarded again (at-least-once)",
    );
  }
  config.routes.forEach((route, i) => {
    const where = `routes[${i}] "${route.name}"`;
    if (!route.protect) return;
    const from = route.key?.from ?? config.defaults.key.from ?? [];
    const scope = route.scope ?? config.defaults.scope;
    if (from.length > 0 && scope.length === 0) {
      out.push(
        `${where}: keys derived from business fields (${from.map((s) => s.text).join(", ")}) and no scope: ` +
          "callers of different tenants sending the same values share one response; add a scope such as header:X-Tenant-Id",
      );
    }
    if (route.onUnknown === "retry") {
      out.push(
        `${where}.onUnknown: retry: a retry after an unknown outcome is forwarded again (at-least-once)`,
      );
    }
    const header = route.key?.header ?? config.defaults.key.header;
    if (header === false && from.length === 0) {
      out.push(`${where}: key.header is false and there is no key.from: no request can get a key`);
    }
    const reconcile = route.reconcile ?? config.defaults.reconcile;
    if ((route.onUnknown ?? config.defaults.onUnknown) === "reconcile" && reconcile) {
      // The probe's verdict is status-only: a probe that names part of the key "finds" any operation
      // sharing that part (another transaction's invoice), and its answer is stored as this one's.
      const named = new Set(
        reconcile.probe.path.template.flatMap((p) => (typeof p === "string" ? [] : [p.text])),
      );
      const keyFields = from.length > 0 ? from.map((s) => s.text) : [`header:${header || "Idempotency-Key"}`];
      const missing = keyFields.filter((f) => !named.has(f) && !named.has(f.toLowerCase()));
      if (missing.length > 0) {
        out.push(
          `${where}.reconcile.probe.path: does not name ${missing.join(", ")}: the probe must name every key field, ` +
            "or a found answer may belong to another operation and be replayed as this one's",
        );
      }
    }
  });
  return out;
}
