import type { AddressInfo } from "node:net";
import { type ServerType, serve } from "@hono/node-server";
import { Hono } from "hono";
import type { IdempotencyStore } from "../store/index.js";

export interface AdminDeps {
  store: IdempotencyStore;
  /** Requests forwarded unprotected because the store was unreachable (failMode: open). */
  unprotectedForwards(): number;
}

/** The operator's listener, apart from the proxied traffic: liveness and readiness. */
export function createAdminApp(deps: AdminDeps): Hono {
  const app = new Hono();
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/readyz", async (c) => {
    const store = await deps.store.ping().then(
      () => ({ kind: deps.store.kind, reachable: true }),
      (err: Error) => ({ kind: deps.store.kind, reachable: false, error: err.message }),
    );
    return c.json(
      {
        status: store.reachable ? "ready" : "store unreachable",
        store,
        unprotectedForwards: deps.unprotectedForwards(),
      },
      store.reachable ? 200 : 503,
    );
  });
  return app;
}

export async function startAdmin(
  deps: AdminDeps,
  host: string,
  port: number,
): Promise<{ url: string; server: ServerType }> {
  const app = createAdminApp(deps);
  return new Promise((resolve) => {
    const server = serve({ fetch: app.fetch, port, hostname: host }, (info: AddressInfo) =>
      resolve({
        url: `http://${info.family === "IPv6" ? `[${info.address}]` : info.address}:${info.port}`,
        server,
      }),
    );
  });
}
