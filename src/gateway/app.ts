import type { IncomingMessage, ServerResponse } from "node:http";
import type { HttpBindings } from "@hono/node-server";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { Hono } from "hono";
import type { Logger } from "pino";
import type { ReconcileRule, RouteTable } from "../config/index.js";
import { StoreUnavailableError } from "../errors.js";
import {
  deriveKey,
  type IdempotencyEngine,
  isMissing,
  isProtected,
  RequestFields,
  type RequestView,
} from "../idempotency/index.js";
import { type ClientInfo, flatten, type Upstream, upstreamRequestHeaders } from "../proxy/index.js";
import type { StoredResponse } from "../store/index.js";
import { readBody } from "./body.js";
import { toProblem } from "./problem.js";

export interface GatewayDeps {
  routes: RouteTable;
  engine: IdempotencyEngine;
  upstream: Upstream;
  failMode: "closed" | "open";
  logger: Logger;
  /** Counts requests forwarded without protection because the store was down (failMode: open). */
  onUnprotected?: (route: string) => void;
}

type Env = { Bindings: HttpBindings };

/** Pass-through request bodies up to this size, with a declared length, are sent in one write. */
const SMALL_BODY = 64 * 1024;

function clientInfo(incoming: IncomingMessage): ClientInfo {
  const encrypted = (incoming.socket as { encrypted?: boolean }).encrypted === true;
  return {
    address: incoming.socket.remoteAddress,
    proto: encrypted ? "https" : "http",
    host: incoming.headers.host,
  };
}

/** Writes a stored (or just stored) response; first answers and replays go out byte for byte alike. */
function writeStored(
  outgoing: ServerResponse,
  response: StoredResponse,
  replayed: boolean | "reconciled",
): void {
  const headers = flatten(response.headers);
  if (replayed) headers.push("idempotent-replayed", replayed === true ? "true" : replayed);
  const bodyless = response.status === 204 || response.status === 304 || response.status < 200;
  if (!bodyless) headers.push("content-length", String(response.body.byteLength));
  outgoing.writeHead(response.status, headers);
  outgoing.end(bodyless ? undefined : response.body);
}

/** Builds the Hono app that proxies every request, protecting the routes the config names. */
export function createApp(deps: GatewayDeps): Hono<Env> {
  const { routes, engine, upstream, logger } = deps;
  const app = new Hono<Env>();

  async function passThrough(incoming: IncomingMessage, outgoing: ServerResponse): Promise<Response> {
    const declared = Number(incoming.headers["content-length"] ?? Number.NaN);
    const chunked = incoming.headers["transfer-encoding"] !== undefined;
    // A small body of declared length goes upstream in one write with its headers; anything larger
    // or of unknown length is streamed as it arrives. Responses are always streamed.
    const small = !chunked && declared >= 0 && declared <= SMALL_BODY;
    const body = small
      ? declared === 0
        ? null
        : await readBody(incoming, SMALL_BODY)
      : chunked || declared > 0
        ? incoming
        : null;
    await upstream.streamTo(
      {
        method: incoming.method as string,
        path: incoming.url as string,
        headers: upstreamRequestHeaders(incoming.rawHeaders, clientInfo(incoming), small),
        body,
      },
      outgoing,
    );
    return RESPONSE_ALREADY_SENT;
  }

  async function forwardBuffered(incoming: IncomingMessage, body: Uint8Array): Promise<StoredResponse> {
    return upstream.sendBuffered({
      method: incoming.method as string,
      path: incoming.url as string,
      headers: upstreamRequestHeaders(incoming.rawHeaders, clientInfo(incoming), true),
      body,
    });
  }

  /** The reconciliation probe: the rule's request, filled from the original, with its credentials. */
  function probe(
    rule: ReconcileRule,
    fields: RequestFields,
    incoming: IncomingMessage,
  ): Promise<StoredResponse> {
    let path = "";
    for (const part of rule.probe.path.template) {
      if (typeof part === "string") {
        path += part;
        continue;
      }
      const value = fields.get(part);
      if (isMissing(value)) return Promise.reject(new Error(`${part.text} is missing for the probe`));
      path += encodeURIComponent(typeof value === "string" ? value : JSON.stringify(value));
    }
    const headers = upstreamRequestHeaders(incoming.rawHeaders, clientInfo(incoming), true);
    const withoutBody: string[] = [];
    for (let i = 0; i < headers.length; i += 2) {
      if (!/^content-/i.test(headers[i] as string))
        withoutBody.push(headers[i] as string, headers[i + 1] as string);
    }
    return upstream.sendBuffered({ method: rule.probe.method, path, headers: withoutBody, body: null });
  }

  app.all("*", async function idempotency(c) {
    const { incoming, outgoing } = c.env;
    const method = incoming.method as string;
    const url = incoming.url as string;
    const q = url.indexOf("?");
    const path = q < 0 ? url : url.slice(0, q);
    const { route, params } = routes.match(method, path);
    const header = (name: string) => {
      const v = incoming.headers[name];
      return Array.isArray(v) ? v.join(", ") : v;
    };
    if (!isProtected(route, method, header)) return passThrough(incoming, outgoing);

    const body = await readBody(incoming, route.settings.maxBodySize);
    const view: RequestView = { method, path, rawQuery: q < 0 ? "" : url.slice(q + 1), header, params, body };
    const fields = new RequestFields(view);
    const key = deriveKey(route, fields);
    if (!key) {
      writeStored(outgoing, await forwardBuffered(incoming, body), false);
      return RESPONSE_ALREADY_SENT;
    }
    try {
      const rule = route.settings.reconcile;
      const result = await engine.handle(
        route.settings,
        key.storeKey,
        key.fingerprint,
        () => forwardBuffered(incoming, body),
        rule && (() => probe(rule, fields, incoming)),
      );
      writeStored(outgoing, result.response, result.replayed);
      logger.debug({ route: route.name, key: key.storeKey, outcome: result.outcome }, "protected request");
    } catch (err) {
      if (!(err instanceof StoreUnavailableError) || deps.failMode !== "open") throw err;
      // failMode: open trades exactly-once for availability while the store is down.
      deps.onUnprotected?.(route.name);
      logger.warn({ route: route.name, err: err.message }, "store unavailable, forwarding unprotected");
      writeStored(outgoing, await forwardBuffered(incoming, body), false);
    }
    return RESPONSE_ALREADY_SENT;
  });

  app.onError((err, c) => {
    const outgoing = c.env?.outgoing;
    if (outgoing?.headersSent) {
      outgoing.destroy(err);
      return RESPONSE_ALREADY_SENT;
    }
    const problem = toProblem(err, c.env?.incoming?.url);
    if (problem.status >= 500) logger.error({ err }, "request failed");
    return new Response(problem.body, { status: problem.status, headers: problem.headers });
  });

  return app;
}
