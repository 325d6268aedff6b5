import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface UpstreamCall {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  rawHeaders: string[];
  body: Buffer;
}

export type UpstreamHandler = (
  call: UpstreamCall,
  res: ServerResponse,
  req: IncomingMessage,
) => void | Promise<void>;

export interface TestUpstream {
  url: string;
  port: number;
  /** Every request that reached the origin, in arrival order. */
  calls: UpstreamCall[];
  /** Resolves when the n-th call (1-based) has arrived. */
  called(n?: number): Promise<UpstreamCall>;
  close(): Promise<void>;
}

const echo: UpstreamHandler = (call, res) => {
  res.setHeader("content-type", "application/json");
  res.end(
    JSON.stringify({ n: Date.now(), method: call.method, url: call.url, body: call.body.toString("utf8") }),
  );
};

/** A real HTTP server on a free port that records what reached it. */
export async function startUpstream(handler: UpstreamHandler = echo): Promise<TestUpstream> {
  const calls: UpstreamCall[] = [];
  const waiting: { n: number; resolve: (c: UpstreamCall) => void }[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const call: UpstreamCall = {
        method: req.method as string,
        url: req.url as string,
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body: Buffer.concat(chunks),
      };
      calls.push(call);
      for (const w of waiting.filter((w) => w.n <= calls.length)) {
        waiting.splice(waiting.indexOf(w), 1);
        w.resolve(calls[w.n - 1] as UpstreamCall);
      }
      Promise.resolve(handler(call, res, req)).catch((err) => res.destroy(err));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    calls,
    called(n = 1) {
      if (calls.length >= n) return Promise.resolve(calls[n - 1] as UpstreamCall);
      return new Promise((resolve) => waiting.push({ n, resolve }));
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A port that refused connections a moment ago: nothing listens there (Caddy's deadUpstreamAddr). */
export async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A promise with its resolver, for holding an upstream answer until the test lets it go. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

/**
 * A non-idempotent backend with its own latency: every request is an execution with a new invoice
 * id, counted per Idempotency-Key, so a test can check "exactly once" on the origin's side.
 */
export async function startCountingUpstream(
  latencyMs: number,
): Promise<TestUpstream & { executions: Map<string, number> }> {
  const executions = new Map<string, number>();
  let seq = 0;
  const upstream = await startUpstream(async (call, res) => {
    const key = String(call.headers["idempotency-key"]);
    executions.set(key, (executions.get(key) ?? 0) + 1);
    const id = ++seq;
    await new Promise((resolve) => setTimeout(resolve, latencyMs));
    res.writeHead(201, { "content-type": "application/json", "x-invoice-id": String(id) });
    res.end(JSON.stringify({ id, key }));
  });
  return Object.assign(upstream, { executions });
}
