import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Client } from "undici";

let warmed: Promise<void> | undefined;

/**
 * Has undici compile its HTTP response parser (WebAssembly, once per process) now, through one
 * exchange with a server of its own on loopback, not at the first upstream exchange. Compiled then,
 * it costs the first request its latency and, with ten thousand duplicates of that request arriving,
 * some 15 MB more peak memory than it does before any traffic. The backend is never asked: it is
 * not idempotent. Best effort, bounded: a failure leaves the compile to the first exchange, as before.
 */
export function warmHttpParser(timeoutMs = 2_000): Promise<void> {
  warmed ??= exchangeWithSelf(timeoutMs).catch(() => undefined);
  return warmed;
}

async function exchangeWithSelf(timeoutMs: number): Promise<void> {
  const server = createServer((_req, res) => res.end());
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      // Exclusive: in a cluster worker, port 0 would otherwise be shared through the primary with
      // the other workers' gateways, and the warm-up request could reach one of them, and the backend.
      server.listen({ port: 0, host: "127.0.0.1", exclusive: true }, resolve);
    });
    const { port } = server.address() as AddressInfo;
    const client = new Client(`http://127.0.0.1:${port}`, {
      connectTimeout: timeoutMs,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    try {
      const res = await client.request({ method: "GET", path: "/" });
      await res.body.dump();
    } finally {
      await client.destroy();
    }
  } finally {
    server.closeAllConnections();
    server.close();
  }
}
