/**
 * Regressions for the duplicate paths found at the edges of the state machine (each test is named
 * after the path it closes). Black-box: a real gateway, a real backend, real sockets; the store is a
 * real one, wrapped only where a fault (a lost reply) has to be injected.
 */
import { type AddressInfo, createServer, type Server } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { startDemoBackend } from "../../src/demo/index.js";
import { MemoryStore } from "../../src/store/index.js";
import { startTestGateway } from "../helpers/gateway.js";
import { send } from "../helpers/http.js";
import { invoice, invoiceRoute, nextCommit, reconcile } from "../helpers/invoices.js";
import { loseReplies } from "../helpers/store-faults.js";
import { closeAfterEach } from "../helpers/teardown.js";
import { gate, startUpstream } from "../helpers/upstream.js";

const use = closeAfterEach();

describe("exactly once at the edges", () => {
  it("path 1, reconcile races the original: a notFound before the settle time is not trusted", async () => {
    // The gateway gives up after 300 ms; the backend commits at 1.5 s. A retry at once probes, finds
    // nothing yet, and must not forward the original a second time.
    const commit = nextCommit();
    const backend = use(
      await startDemoBackend({ port: 0, stallRate: 1, stallMs: 1_500, onCommit: commit.hook }),
    );
    const gateway = use(
      await startTestGateway({
        upstream: { url: backend.url, timeout: "300ms" },
        routes: [invoiceRoute({ onUnknown: "reconcile", reconcile: { ...reconcile, settle: "5s" } })],
      }),
    );
    const url = `${gateway.url}/invoices`;
    expect((await send(url, invoice("INV-RACE"))).status).toBe(504);
    const early = await send(url, invoice("INV-RACE"));
    const early2 = await send(url, invoice("INV-RACE"));
    expect(early.status).toBe(409);
    expect(early.json()).toMatchObject({ code: "OUTCOME_UNKNOWN" });
    const retryAfter = Number(early.headers["retry-after"]);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(5);
    expect(early2.status).toBe(409);
    await commit.committed;
    const late = await send(url, invoice("INV-RACE"));
    expect(late.status).toBe(200);
    expect(late.headers["idempotent-replayed"]).toBe("reconciled");
    expect(backend.stats().executions).toBe(1);
  });

  it("path 4, waiters become fresh attempts: copies that waited on an unstored answer get that answer", async () => {
    let executions = 0;
    const release = gate();
    const upstream = use(
      await startUpstream(async (_call, res) => {
        executions++;
        await release.promise;
        // Commits, then fails: a status the route does not store.
        res.writeHead(503, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: "committed, then failed", n: executions }));
      }),
    );
    const gateway = use(await startTestGateway({ upstream: upstream.url, defaults: { cache: ["2xx"] } }));
    const headers = { "idempotency-key": "waiters-500" };
    const first = send(`${gateway.url}/pay`, { headers, body: "{}" });
    await upstream.called(1);
    const copies = Array.from({ length: 9 }, () => send(`${gateway?.url}/pay`, { headers, body: "{}" }));
    // Every copy is waiting once the engine counts it so.
    while (gateway.engine.waitingDuplicates < 9) await new Promise((r) => setImmediate(r));
    release.open();
    const answers = await Promise.all([first, ...copies]);
    expect(executions).toBe(1);
    for (const a of answers) expect([503, 409]).toContain(a.status);
    const bodies = answers.filter((a) => a.status === 503).map((a) => a.body.toString());
    expect(new Set(bodies).size).toBe(1);
  });

  it("path 7, a lost store reply strands a key: a begin whose reply was lost leaves the key free", async () => {
    const upstream = use(await startUpstream());
    const memory = new MemoryStore();
    const faulty = loseReplies(memory);
    const gateway = use(
      await startTestGateway({ upstream: upstream.url, defaults: { lockTtl: "1s" } }, faulty.store),
    );
    const headers = { "idempotency-key": "lost-begin" };
    faulty.loseNext("begin");
    const lost = await send(`${gateway.url}/pay`, { headers, body: "{}" });
    expect(lost.status).toBe(503);
    expect(upstream.calls).toHaveLength(0);
    // Nothing was forwarded, so nothing may say "unknown", not even after the lease has run out.
    const key = faulty.lastKey("begin");
    expect(await memory.get(key as string)).toBeUndefined();
    const retry = await send(`${gateway.url}/pay`, { headers, body: "{}" });
    expect(retry.status).toBe(200);
    expect(upstream.calls).toHaveLength(1);
  });
});

describe("keep-alive connections to the upstream", () => {
  let backendServer: Server | undefined;
  afterEach(async () => {
    await new Promise((resolve) => backendServer?.close(resolve) ?? resolve(undefined));
    backendServer = undefined;
  });

  it("path 8: the gateway closes an idle connection before a backend with a shorter idle timeout does", async () => {
    // A backend that keeps connections 2.5 s and says nothing about it (no Keep-Alive hint), as many
    // do; undici's own default (4 s) would leave it to the backend to close, and a close that crosses
    // the next request on the wire leaves that request's outcome unknown.
    let closeFirst!: (by: "gateway" | "backend") => void;
    const closedBy = new Promise<"gateway" | "backend">((resolve) => {
      closeFirst = resolve;
    });
    backendServer = createServer((socket) => {
      const idle = setTimeout(() => {
        closeFirst("backend");
        socket.destroy();
      }, 2_500);
      socket.on("data", () => socket.write("HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"));
      socket.on("end", () => {
        clearTimeout(idle);
        closeFirst("gateway");
        socket.destroy();
      });
    });
    await new Promise<void>((resolve) => backendServer?.listen(0, "127.0.0.1", resolve));
    const { port } = backendServer.address() as AddressInfo;
    const gateway = use(await startTestGateway({ upstream: `http://127.0.0.1:${port}` }));
    const res = await send(`${gateway.url}/pay`, { headers: { "idempotency-key": "idle-1" }, body: "{}" });
    expect(res.status).toBe(201);
    expect(await closedBy).toBe("gateway");
  });
});
