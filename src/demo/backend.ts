import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** How the simulated legacy backend misbehaves; every rate is a probability from 0 to 1. */
export interface DemoBackendOptions {
  host?: string;
  port?: number;
  /** Delay before each POST is handled: [min, max] milliseconds. */
  latencyMs?: readonly [number, number];
  /** Answer 503 before committing. */
  failRate?: number;
  /** Commit, then fail: with `failMode` "500" answer 500, with "drop" cut the connection. */
  failAfterCommit?: number;
  failMode?: "500" | "drop";
  /** Commit only after `stallMs` (a 31 s commit behind a 30 s client timeout). */
  stallRate?: number;
  stallMs?: number;
  random?: () => number;
  /** Called after each commit (tests await it instead of sleeping). */
  onCommit?: (invoice: Invoice) => void;
}

export interface Invoice {
  id: string;
  invoiceNumber: string;
  transactionId: unknown;
  amount: unknown;
  createdAt: string;
}

export interface DemoStats {
  executions: number;
  distinctKeys: number;
  duplicates: number;
}

export interface RunningDemoBackend {
  url: string;
  port: number;
  stats(): DemoStats;
  close(): Promise<void>;
}

const json = (res: ServerResponse, status: number, body: unknown) => {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
};

/** A JSON body, or a form body as SDKs that speak form encoding send it (Stripe's). */
function readFields(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("error", reject);
    req.on("end", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      try {
        resolve(JSON.parse(text));
      } catch (err) {
        // JSON first: `curl -d '{...}'` labels JSON as a form.
        if (/^application\/x-www-form-urlencoded/i.test(req.headers["content-type"] ?? "")) {
          resolve(Object.fromEntries(new URLSearchParams(text)));
        } else reject(err);
      }
    });
  });
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A deliberately non-idempotent invoice API: every POST /invoices (and every robot's callback,
 * POST /callbacks/:robot) creates a new invoice, so a
 * retried request is a duplicate invoice. It counts executions and duplicates per business key
 * (invoiceNumber + transactionId) so that a storm can prove what reached it.
 */
export async function startDemoBackend(options: DemoBackendOptions = {}): Promise<RunningDemoBackend> {
  const random = options.random ?? Math.random;
  const [minLatency, maxLatency] = options.latencyMs ?? [0, 0];
  const byNumber = new Map<string, Invoice[]>();
  const executionsByKey = new Map<string, number>();
  let executions = 0;
  let seq = 0;
  const stats = (): DemoStats => ({
    executions,
    distinctKeys: executionsByKey.size,
    duplicates: executions - executionsByKey.size,
  });

  function commit(body: Record<string, unknown>): Invoice {
    const invoice: Invoice = {
      id: `INV-${String(++seq).padStart(6, "0")}`,
      invoiceNumber: String(body.invoiceNumber),
      // RPA robots call back with transactionID, the invoice API's own clients with transactionId.
      transactionId: body.transactionId ?? body.transactionID ?? null,
      amount: body.amount ?? null,
      createdAt: new Date().toISOString(),
    };
    executions++;
    const key = JSON.stringify([invoice.invoiceNumber, invoice.transactionId]);
    executionsByKey.set(key, (executionsByKey.get(key) ?? 0) + 1);
    byNumber.set(invoice.invoiceNumber, [...(byNumber.get(invoice.invoiceNumber) ?? []), invoice]);
    options.onCommit?.(invoice);
    return invoice;
  }

  async function createInvoice(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let body: Record<string, unknown>;
    try {
      body = (await readFields(req)) as Record<string, unknown>;
    } catch {
      return json(res, 400, { error: "body is not JSON" });
    }
    if (body === null || typeof body !== "object" || !body.invoiceNumber) {
      return json(res, 400, { error: "invoiceNumber is required" });
    }
    const latency = minLatency + (maxLatency - minLatency) * random();
    if (latency > 0) await delay(latency);
    if (random() < (options.failRate ?? 0)) return json(res, 503, { error: "temporarily unavailable" });
    if (random() < (options.stallRate ?? 0)) await delay(options.stallMs ?? 31_000);
    const invoice = commit(body);
    if (random() < (options.failAfterCommit ?? 0)) {
      if (options.failMode === "drop") {
        res.socket?.destroy();
        return;
      }
      return json(res, 500, { error: "internal error after commit" });
    }
    json(res, 201, invoice);
  }

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://backend");
    if (
      req.method === "POST" &&
      (url.pathname === "/invoices" || /^\/callbacks\/[^/]+$/.test(url.pathname))
    ) {
      createInvoice(req, res).catch(() => res.destroy());
    } else if (req.method === "GET" && url.pathname === "/invoices") {
      // A probe must be able to name the whole business key: an invoice number alone matches
      // another transaction's invoice.
      const tx = url.searchParams.get("transactionId");
      const found = (byNumber.get(url.searchParams.get("number") ?? "") ?? []).filter(
        (i) => tx === null || String(i.transactionId) === tx,
      );
      if (found.length > 0) json(res, 200, found);
      else json(res, 404, { error: "no such invoice" });
    } else if (req.method === "GET" && url.pathname === "/stats") {
      json(res, 200, stats());
    } else if (req.method === "GET" && url.pathname === "/health") {
      json(res, 200, { ok: true });
    } else {
      json(res, 404, { error: "not found" });
    }
  });
  await new Promise<void>((resolve) =>
    server.listen(options.port ?? 9000, options.host ?? "127.0.0.1", resolve),
  );
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${options.host ?? "127.0.0.1"}:${port}`,
    port,
    stats,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
