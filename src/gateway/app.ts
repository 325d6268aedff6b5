import type { IncomingMessage, ServerResponse } from "node:http";
import type { HttpBindings } from "@hono/node-server";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { Hono } from "hono";
import type { Logger } from "pino";
import type { CompiledRoute, ReconcileRule, RouteTable } from "../config/index.js";
import {
  AmbiguousRequestError,
  BodyTooLargeError,
  GatewayError,
  NoRouteError,
  ResponseTooLargeError,
  StoreUnavailableError,
  UntrustedHeaderError,
} from "../errors.js";
import {
  checkRequired,
  deriveKey,
  type EngineResult,
  type IdempotencyEngine,
  isMissing,
  isProtected,
  RequestFields,
  type RequestView,
} from "../idempotency/index.js";
import { newId } from "../ids.js";
import {
  type ClientInfo,
  flatHeaders,
  normalizeTarget,
  TrustedProxies,
  type Upstream,
  upstreamRequestHeaders,
} from "../proxy/index.js";
import type { StoredResponse } from "../store/index.js";
import { readBody } from "./body.js";
import {
  type Observer,
  outcomeOfError,
  outcomeOfResult,
  type RequestEvent,
  RequestOutcome,
} from "./observe.js";
import { toProblem } from "./problem.js";

export interface GatewayDeps {
  routes: RouteTable;
  engine: IdempotencyEngine;
  upstream: Upstream;
  failMode: "closed" | "open";
  logger: Logger;
  /** Told once about every protected request: logs, metrics, attempt log. */
  observe: Observer;
  /**
   * Told about requests passed through on a route that protects others (a GET on /invoices): the
   * CallbackLog keeps them too. Unset, nothing is done for them.
   */
  auditPassThrough?: Observer;
  /** Keep request bodies in the attempt log (audit.payloads). */
  auditPayloads?: boolean;
  /** Peers whose forwarding headers, and `trustedHeaders`, are believed (trustProxy). */
  trust?: TrustedProxies;
  /** Lower-case names of headers only a trusted proxy may set. */
  trustedHeaders?: readonly string[];
}

type Env = {
  Bindings: HttpBindings;
  /** Set as soon as they are known, so that an error answer carries them. */
  Variables: { requestId: string; route: CompiledRoute };
};

/** Pass-through request bodies up to this size, with a declared length, are sent in one write. */
const SMALL_BODY = 64 * 1024;

/** Headers that frameworks read as "the real method" (Rails, Express method-override, ASP.NET, Symfony). */
const METHOD_OVERRIDES = ["x-http-method-override", "x-http-method", "x-method-override"];

const REQUEST_ID = /^[\x21-\x7e]{1,200}$/;

/** The caller's X-Request-Id when it is a sane token, else a fresh one. */
export function requestIdOf(incoming: IncomingMessage): string {
  const given = incoming.headers["x-request-id"];
  return typeof given === "string" && REQUEST_ID.test(given) ? given : newId();
}

function clientInfo(incoming: IncomingMessage, trusted: boolean, requestId?: string): ClientInfo {
  const encrypted = (incoming.socket as { encrypted?: boolean }).encrypted === true;
  return {
    trusted,
    address: incoming.socket.remoteAddress,
    proto: encrypted ? "https" : "http",
    host: incoming.headers.host,
    requestId,
  };
}

/** What is forwarded: the normalized path that routes matched, and the query as sent. */
function forwardedTarget(view: RequestView): string {
  return view.rawQuery ? `${view.path}?${view.rawQuery}` : view.path;
}

/**
 * Writes a stored (or just stored) response; first answers and replays go out byte for byte alike.
 * X-Request-Id is this request's, so that every caller can correlate its own answer; the stored
 * record keeps whatever the upstream sent.
 */
function writeStored(
  outgoing: ServerResponse,
  response: StoredResponse,
  replayed: boolean | "reconciled",
  requestId: string,
): void {
  const headers = flatHeaders(response.headers, requestId);
  if (replayed) headers.push("idempotent-replayed", replayed === true ? "true" : replayed);
  const bodyless = response.status === 204 || response.status === 304 || response.status < 200;
  if (!bodyless) headers.push("content-length", String(response.body.byteLength));
  outgoing.writeHead(response.status, headers);
  outgoing.end(bodyless ? undefined : response.body);
}

/**
 * The upstream headers with the route's operation id header set to the stored key, replacing what
 * the client sent under that name: the backend's unique index then sees one id per operation,
 * whatever key a client minted for this attempt.
 */
function withOperationId(headers: string[], name: string | false, storeKey: string | undefined): string[] {
  if (name === false || storeKey === undefined) return headers;
  const lower = name.toLowerCase();
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    if ((headers[i] as string).toLowerCase() !== lower)
      out.push(headers[i] as string, headers[i + 1] as string);
  }
  out.push(name, storeKey);
  return out;
}

/** A request's header by lower-case name, repeated lines joined as Node joins them. */
function headerReader(req: IncomingMessage): (name: string) => string | undefined {
  return (name) => {
    const v = req.headers[name];
    return Array.isArray(v) ? v.join(", ") : v;
  };
}

/**
 * `Expect: 100-continue` with a declared body larger than the route reads: answered 413 before the
 * client sends it. True when it answered.
 */
export function refuseOversizeExpect(
  routes: RouteTable,
  req: IncomingMessage,
  res: ServerResponse,
  observe?: Observer,
): boolean {
  const declared = Number(req.headers["content-length"]);
  if (!Number.isFinite(declared)) return false;
  let path: string;
  try {
    path = normalizeTarget(req.url as string).path;
  } catch {
    return false; // the request handler refuses it with the reason
  }
  const method = req.method as string;
  const { route } = routes.match(method, path);
  const limit = route.settings.maxBodySize;
  const header = headerReader(req);
  if (declared <= limit || !isProtected(route, method, header)) return false;
  const err = new BodyTooLargeError(limit);
  const requestId = requestIdOf(req);
  const problem = toProblem(err, { instance: req.url, requestId, shape: route.settings.errorBody });
  res.writeHead(problem.status, { ...problem.headers, connection: "close" });
  res.end(problem.body);
  observe?.({
    ...requestEvent(requestId, route.name, method, path, RequestOutcome.Rejected, err.status),
    errorCode: err.code,
  });
  return true;
}

/** A request's event as it starts: its outcome and status are set as it goes on. */
function requestEvent(
  requestId: string,
  route: string,
  method: string,
  path: string,
  outcome: RequestOutcome,
  status: number,
): RequestEvent {
  return { time: Date.now(), requestId, route, method, path, outcome, status, totalMs: 0 };
}

/** Builds the Hono app that proxies every request, protecting the routes the config names. */
export function createApp(deps: GatewayDeps): Hono<Env> {
  const { routes, engine, upstream, logger } = deps;
  const trust = deps.trust ?? new TrustedProxies([]);
  const trustedHeaders = deps.trustedHeaders ?? [];
  const app = new Hono<Env>();
  const trusted = (incoming: IncomingMessage) => trust.trusts(incoming.socket.remoteAddress);

  /**
   * What would let one request be read one way here and another way upstream: TRACE (which echoes
   * credentials back); a method-override header anywhere but on a `protect: false` route (a GET
   * that the backend runs as a POST would pass unprotected); and, on a protected request, a
   * Connection header naming a header that the key, scope
   * or identity is read from (the gateway would read it, then strip it before the backend sees it).
   */
  function refuseAmbiguous(route: CompiledRoute, guarded: boolean, incoming: IncomingMessage): void {
    if (incoming.method === "TRACE" || incoming.method === "TRACK")
      throw new AmbiguousRequestError(`${incoming.method} is not forwarded`, 405);
    // Everywhere but on a route that is never protected: a GET /invoices claiming to be a POST
    // matches no POST route, so it would pass through and be executed as one.
    if (route.protect) {
      for (const name of METHOD_OVERRIDES) {
        if (incoming.headers[name] !== undefined)
          throw new AmbiguousRequestError(`${name} is not accepted here; send the method itself`);
      }
    }
    if (!guarded) return;
    const connection = incoming.headers.connection;
    if (connection === undefined) return;
    for (const token of connection.split(",")) {
      const name = token.trim().toLowerCase();
      if (route.settings.readsHeaders.has(name))
        throw new AmbiguousRequestError(`Connection names ${name}, which this route reads a key from`);
    }
  }

  /** A header that only a trusted proxy sets, sent by anyone else, would let a caller name another tenant. */
  function refuseUntrustedHeaders(incoming: IncomingMessage): void {
    if (trustedHeaders.length === 0 || trusted(incoming)) return;
    for (const name of trustedHeaders) {
      if (incoming.headers[name] !== undefined) throw new UntrustedHeaderError(name);
    }
  }

  async function passThrough(
    incoming: IncomingMessage,
    outgoing: ServerResponse,
    target: string,
    requestId: string,
  ): Promise<Response> {
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
        path: target,
        headers: upstreamRequestHeaders(
          incoming.rawHeaders,
          clientInfo(incoming, trusted(incoming), requestId),
          small,
        ),
        body,
      },
      outgoing,
      requestId,
    );
    return RESPONSE_ALREADY_SENT;
  }

  /** A pass-through on a route that protects others, told to the audit trail once answered. */
  async function auditedPassThrough(
    incoming: IncomingMessage,
    outgoing: ServerResponse,
    route: CompiledRoute,
    path: string,
    rawQuery: string,
    requestId: string,
    audit: Observer,
  ): Promise<Response> {
    const ev = requestEvent(requestId, route.name, incoming.method as string, path, RequestOutcome.Passed, 0);
    const started = performance.now();
    try {
      return await passThrough(incoming, outgoing, rawQuery ? `${path}?${rawQuery}` : path, requestId);
    } catch (err) {
      ev.errorCode = err instanceof GatewayError ? err.code : "INTERNAL";
      ev.status = err instanceof GatewayError ? err.status : 500;
      throw err;
    } finally {
      ev.status ||= outgoing.statusCode;
      ev.totalMs = performance.now() - started;
      audit(ev);
    }
  }

  /** Headers of a protected request's upstream calls (the request and its probe), operation id included. */
  function protectedHeaders(incoming: IncomingMessage, route: CompiledRoute, ev: RequestEvent): string[] {
    const headers = upstreamRequestHeaders(
      incoming.rawHeaders,
      clientInfo(incoming, trusted(incoming), ev.requestId),
      true,
    );
    return withOperationId(headers, route.settings.operationIdHeader, ev.storeKey);
  }

  /** A protected request's upstream call, timed for the request's event. */
  function forwardBuffered(
    incoming: IncomingMessage,
    outgoing: ServerResponse,
    route: CompiledRoute,
    view: RequestView,
    ev: RequestEvent,
  ): Promise<StoredResponse> {
    const started = performance.now();
    const sent = upstream.sendBuffered(
      {
        method: incoming.method as string,
        path: forwardedTarget(view),
        headers: protectedHeaders(incoming, route, ev),
        body: view.body,
      },
      { maxBytes: route.settings.maxResponseSize, overflow: outgoing, requestId: ev.requestId },
    );
    const done = () => {
      ev.upstreamMs = (ev.upstreamMs ?? 0) + (performance.now() - started);
    };
    sent.then(done, done);
    return sent;
  }

  /** The reconciliation probe: the rule's request, filled from the original, with its credentials. */
  function probe(
    route: CompiledRoute,
    rule: ReconcileRule,
    fields: RequestFields,
    incoming: IncomingMessage,
    ev: RequestEvent,
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
    const headers = protectedHeaders(incoming, route, ev);
    const withoutBody: string[] = [];
    for (let i = 0; i < headers.length; i += 2) {
      if (!/^content-/i.test(headers[i] as string))
        withoutBody.push(headers[i] as string, headers[i + 1] as string);
    }
    return upstream.sendBuffered(
      { method: rule.probe.method, path, headers: withoutBody, body: null },
      { maxBytes: route.settings.maxResponseSize },
    );
  }

  /** A protected request forwarded without a key's protection (none derived, or failMode: open). */
  async function forwardUnkeyed(
    incoming: IncomingMessage,
    outgoing: ServerResponse,
    route: CompiledRoute,
    view: RequestView,
    ev: RequestEvent,
    outcome: RequestOutcome,
  ): Promise<void> {
    const response = await forwardBuffered(incoming, outgoing, route, view, ev);
    ev.outcome = outcome;
    ev.status = response.status;
    writeStored(outgoing, response, false, ev.requestId);
  }

  /**
   * A protected request from its body to its answer, which it writes itself, errors included: the
   * framework's handler has returned by then, so that a request waiting on a duplicate holds only
   * what it needs, not the framework's context and async frames as well.
   */
  async function protectedRequest(
    route: CompiledRoute,
    view: RequestView,
    incoming: IncomingMessage,
    outgoing: ServerResponse,
    ev: RequestEvent,
  ): Promise<void> {
    const started = performance.now();
    try {
      view.body = await readBody(incoming, route.settings.maxBodySize);
      if (deps.auditPayloads) ev.payload = Buffer.from(view.body).toString("utf8");
      const fields = new RequestFields(view);
      checkRequired(route, fields);
      const key = deriveKey(route, fields);
      if (!key) return await forwardUnkeyed(incoming, outgoing, route, view, ev, RequestOutcome.Executed);
      ev.storeKey = key.storeKey;
      ev.keyKind = key.kind;
      ev.material = key.material;
      ev.scope = key.scope;
      ev.identity = key.identity;
      let result: EngineResult;
      try {
        const rule = route.settings.reconcile;
        result = await engine.handle(
          route.settings,
          key.storeKey,
          key.fingerprint,
          () => forwardBuffered(incoming, outgoing, route, view, ev),
          rule && (() => probe(route, rule, fields, incoming, ev)),
        );
      } catch (err) {
        if (!(err instanceof StoreUnavailableError) || deps.failMode !== "open") throw err;
        // failMode: open trades exactly-once for availability while the store is down.
        logger.warn(
          { route: route.name, requestId: ev.requestId, err: err.message },
          "store unavailable, forwarding unprotected",
        );
        return await forwardUnkeyed(incoming, outgoing, route, view, ev, RequestOutcome.Unprotected);
      }
      ev.outcome = outcomeOfResult(result.outcome);
      ev.status = result.response.status;
      writeStored(outgoing, result.response, result.replayed, ev.requestId);
    } catch (err) {
      ev.outcome = outcomeOfError(err);
      ev.status = err instanceof GatewayError ? err.status : 500;
      ev.errorCode = err instanceof GatewayError ? err.code : "INTERNAL";
      // An answer too large to store went to this caller as it arrived: nothing more to say.
      if (err instanceof ResponseTooLargeError && err.delivered) ev.status = err.upstreamStatus;
      else writeProblem(outgoing, err, incoming.url, ev.requestId, route);
    } finally {
      ev.totalMs = performance.now() - started;
      deps.observe(ev);
    }
  }

  /** An error's answer, as RFC 9457 problem details; a response already under way is cut off instead. */
  function writeProblem(
    outgoing: ServerResponse,
    err: unknown,
    instance: string | undefined,
    requestId: string | undefined,
    route: CompiledRoute | undefined,
  ): void {
    if (outgoing.headersSent) {
      outgoing.destroy(err instanceof Error ? err : undefined);
      return;
    }
    const problem = toProblem(err, {
      instance,
      requestId,
      shape: (route ?? routes.fallback).settings.errorBody,
    });
    if (problem.status >= 500) logger.error({ err }, "request failed");
    outgoing.writeHead(problem.status, {
      ...problem.headers,
      "content-length": Buffer.byteLength(problem.body),
    });
    outgoing.end(problem.body);
  }

  app.all("*", function idempotency(c) {
    const { incoming, outgoing } = c.env;
    const requestId = requestIdOf(incoming);
    c.set("requestId", requestId);
    const method = incoming.method as string;
    let routeName = "(none)";
    let target = String(incoming.url);
    const refused = (err: unknown): never => {
      // A request refused before it was protected or passed on is told to the observers too: an
      // audit trail has a row for every request that a route could have protected.
      if (err instanceof GatewayError) {
        deps.observe({
          ...requestEvent(requestId, routeName, method, target, RequestOutcome.Rejected, err.status),
          errorCode: err.code,
        });
      }
      throw err;
    };
    let path: string;
    let rawQuery: string;
    let route: CompiledRoute;
    let params: Record<string, string>;
    let header: ReturnType<typeof headerReader>;
    try {
      ({ path, rawQuery } = normalizeTarget(target));
      target = path;
      ({ route, params } = routes.match(method, path));
      routeName = route.name;
      c.set("route", route);
      if (route.fallback && routes.unmatched === "reject") throw new NoRouteError();
      refuseUntrustedHeaders(incoming);
      header = headerReader(incoming);
      // Unmatched requests are guarded only when they carry a key: then they are protected (or would
      // be, under the method they claim).
      const keyHeader = route.settings.key.header;
      const guarded = route.fallback
        ? keyHeader !== false && header(keyHeader.toLowerCase()) !== undefined
        : route.protect;
      refuseAmbiguous(route, guarded, incoming);
    } catch (err) {
      return refused(err);
    }
    if (!isProtected(route, method, header)) {
      const audit = route.fallback ? undefined : deps.auditPassThrough;
      if (!audit) return passThrough(incoming, outgoing, rawQuery ? `${path}?${rawQuery}` : path, requestId);
      return auditedPassThrough(incoming, outgoing, route, path, rawQuery, requestId, audit);
    }

    const ev = requestEvent(requestId, route.name, method, path, RequestOutcome.Error, 500);
    const view: RequestView = {
      method,
      path,
      rawQuery,
      header,
      params,
      body: new Uint8Array(),
    };
    protectedRequest(route, view, incoming, outgoing, ev).catch((err: unknown) => {
      // Only writing the error's answer or telling the observers can throw here.
      logger.error({ err, requestId }, "request failed while answering or observing it");
      outgoing.destroy();
    });
    return RESPONSE_ALREADY_SENT;
  });

  app.onError((err, c) => {
    writeProblem(c.env.outgoing, err, c.env.incoming.url, c.get("requestId"), c.get("route"));
    return RESPONSE_ALREADY_SENT;
  });

  return app;
}
