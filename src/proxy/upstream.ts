import type { ServerResponse } from "node:http";
import { connect } from "node:net";
import type { Readable } from "node:stream";
import { type Dispatcher, Pool } from "undici";
import {
  type GatewayError,
  ResponseTooLargeError,
  UpstreamFailedError,
  UpstreamUnreachableError,
} from "../errors.js";
import type { StoredResponse } from "../store/types.js";
import { flatHeaders, responseHeaderPairs } from "./headers.js";

export interface UpstreamOptions {
  url: string;
  timeoutMs: number;
  connections: number;
  /** Idle time after which a pooled connection is closed (undici also honours a shorter Keep-Alive hint). */
  keepAliveTimeoutMs?: number;
}

export interface BufferLimits {
  /** The largest answer held in memory (maxResponseSize). */
  maxBytes?: number;
  /** Where an answer larger than that is streamed instead: the first caller's response. */
  overflow?: ServerResponse;
  /** The X-Request-Id that an answer streamed to `overflow` carries. */
  requestId?: string;
}

export interface OutboundRequest {
  method: string;
  /** Path and query as received; the upstream URL's own path is put in front. */
  path: string;
  headers: string[];
  body: Uint8Array | Readable | null;
}

/**
 * Error codes raised before any byte of the request was written: the upstream cannot have acted.
 * Everything else happened on an open connection and is treated as "the request may have arrived".
 */
const NOTHING_SENT = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EADDRNOTAVAIL",
  "UND_ERR_CONNECT_TIMEOUT",
]);
const TIMEOUTS = new Set(["UND_ERR_HEADERS_TIMEOUT", "UND_ERR_BODY_TIMEOUT"]);

function errorCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 3 && e; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && code !== "UND_ERR") return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** The typed wrapper for an upstream failure, decided by error code only. */
export function classifyUpstreamError(err: unknown): GatewayError {
  if (
    err instanceof UpstreamUnreachableError ||
    err instanceof UpstreamFailedError ||
    err instanceof ResponseTooLargeError
  )
    return err;
  const code = errorCode(err) ?? "unknown error";
  if (NOTHING_SENT.has(code)) return new UpstreamUnreachableError(code, { cause: err });
  return new UpstreamFailedError(TIMEOUTS.has(code), code, { cause: err });
}

/** One upstream origin behind a keep-alive pool. */
export class Upstream {
  private readonly pool: Pool;
  private readonly basePath: string;

  constructor(readonly options: UpstreamOptions) {
    const url = new URL(options.url);
    this.basePath = url.pathname.replace(/\/+$/, "");
    this.pool = new Pool(url.origin, {
      connections: options.connections,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      connectTimeout: Math.min(options.timeoutMs, 10_000),
      // Both: the first applies when the backend sends no Keep-Alive hint, the second caps its hint.
      keepAliveTimeout: options.keepAliveTimeoutMs ?? 1_000,
      keepAliveMaxTimeout: options.keepAliveTimeoutMs ?? 1_000,
    });
  }

  /**
   * Sends a request and reads the whole response, for storing. A dispatch handler rather than
   * `request()`, because only the raw header list keeps the upstream's header order and case,
   * which a replay must reproduce.
   *
   * The upstream timeout is a deadline for the whole exchange, not undici's idle timers (which a
   * backend trickling a byte a second never trips, and which run on a one-second clock). An answer
   * larger than `maxBytes` is not held: it streams on to `overflow` (the first caller) and the call
   * rejects with ResponseTooLargeError once it has been delivered, or at once without `overflow`.
   */
  sendBuffered(req: OutboundRequest, limits: BufferLimits = {}): Promise<StoredResponse> {
    const maxBytes = limits.maxBytes ?? Number.POSITIVE_INFINITY;
    const timeoutMs = this.options.timeoutMs;
    return new Promise((resolve, reject) => {
      let status = 0;
      let headers: [string, string][] = [];
      let chunks: Buffer[] = [];
      let size = 0;
      let streaming: ServerResponse | undefined;
      let deadline: NodeJS.Timeout | undefined;
      const fail = (err: unknown) => {
        clearTimeout(deadline);
        if (streaming && !streaming.writableEnded) streaming.destroy();
        reject(classifyUpstreamError(err));
      };
      this.pool.dispatch(
        {
          method: req.method as Dispatcher.HttpMethod,
          path: this.basePath + req.path,
          headers: req.headers,
          body: req.body,
        },
        {
          onRequestStart(controller) {
            deadline = setTimeout(
              () =>
                controller.abort(new UpstreamFailedError(true, `no complete answer within ${timeoutMs} ms`)),
              timeoutMs,
            );
          },
          onResponseStart(controller, statusCode, parsed) {
            status = statusCode;
            const raw = controller.rawHeaders;
            headers = responseHeaderPairs(Array.isArray(raw) ? raw : parsed, true);
          },
          onResponseData(controller, chunk) {
            size += chunk.length;
            if (streaming) {
              if (!streaming.destroyed && !streaming.write(chunk)) {
                controller.pause();
                streaming.once("drain", () => controller.resume());
              }
              return;
            }
            chunks.push(chunk);
            if (size <= maxBytes) return;
            const out = limits.overflow;
            if (!out || out.headersSent || out.destroyed) {
              controller.abort(new ResponseTooLargeError(maxBytes, status, false));
              return;
            }
            streaming = out;
            out.writeHead(status, flatHeaders(headers, limits.requestId));
            for (const c of chunks) out.write(c);
            chunks = [];
          },
          onResponseEnd() {
            clearTimeout(deadline);
            if (streaming) {
              streaming.end();
              reject(new ResponseTooLargeError(maxBytes, status, true));
              return;
            }
            resolve({
              status,
              headers,
              body: chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size),
            });
          },
          onResponseError(_controller, err) {
            fail(err);
          },
        },
      );
    });
  }

  /**
   * Streams the upstream's response straight into `outgoing` as it arrives, with backpressure both
   * ways, and aborts the upstream call if the client goes away. Rejects with a classified error only
   * while nothing has been written; after that a failure cuts the client's connection, as a proxy must.
   * A dispatch handler rather than `request()` + `pipeline()`: no intermediate stream, no per-request
   * AbortController, and the upstream's raw header order.
   */
  streamTo(req: OutboundRequest, outgoing: ServerResponse, requestId?: string): Promise<void> {
    return new Promise((resolve, reject) => {
      let finished = false;
      const settle = (err?: Error) => {
        if (finished) return;
        finished = true;
        if (err) reject(err);
        else resolve();
      };
      this.pool.dispatch(
        {
          method: req.method as Dispatcher.HttpMethod,
          path: this.basePath + req.path,
          headers: req.headers,
          body: req.body,
        },
        {
          onRequestStart(controller) {
            outgoing.once("close", () => {
              if (!outgoing.writableFinished) controller.abort(new Error("client closed the connection"));
            });
          },
          onResponseStart(controller, statusCode, parsed) {
            const raw = controller.rawHeaders;
            const pairs = responseHeaderPairs(Array.isArray(raw) ? raw : parsed, false);
            outgoing.writeHead(statusCode, flatHeaders(pairs, requestId));
          },
          onResponseData(controller, chunk) {
            if (!outgoing.write(chunk)) {
              controller.pause();
              outgoing.once("drain", () => controller.resume());
            }
          },
          onResponseEnd() {
            outgoing.end();
            settle();
          },
          onResponseError(_controller, err) {
            if (outgoing.headersSent) {
              outgoing.destroy(err);
              settle();
            } else settle(classifyUpstreamError(err));
          },
        },
      );
    });
  }

  /**
   * Whether the upstream accepts TCP connections. A connect, not a request: readiness checks run
   * often, and any request could have effects on a backend that is not idempotent.
   */
  reachable(timeoutMs = 1_000): Promise<{ reachable: boolean; error?: string }> {
    const url = new URL(this.options.url);
    const port = Number(url.port || (url.protocol === "https:" ? 443 : 80));
    return new Promise((resolve) => {
      const socket = connect({ host: url.hostname.replace(/^\[|\]$/g, ""), port });
      const done = (result: { reachable: boolean; error?: string }) => {
        socket.destroy();
        resolve(result);
      };
      socket.setTimeout(timeoutMs, () =>
        done({ reachable: false, error: `no connection within ${timeoutMs} ms` }),
      );
      socket.once("connect", () => done({ reachable: true }));
      socket.once("error", (err: NodeJS.ErrnoException) =>
        done({ reachable: false, error: err.code ?? err.message }),
      );
    });
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}
