/**
 * Every error the gateway answers with on purpose. Each has a stable `code` that callers and tests
 * branch on, the HTTP status it maps to, and a title; `gateway/problem.ts` turns them into RFC 9457
 * problem+json in one place. Anything that is not a GatewayError is a bug and becomes a bare 500.
 *
 * Each also says whether sending the same request again can get another answer (`retryable`), and,
 * only when a retry can succeed after a known time, how long to wait (`retryAfterSeconds`, sent as
 * Retry-After). A Retry-After on an answer that no wait will change makes clients that honour it
 * sleep for nothing and then get the same answer.
 */
export class GatewayError extends Error {
  /** Whether the same request, sent again, may get another answer. */
  retryable = false;
  /** Seconds after which a retry can succeed; undefined when no wait is known to help. */
  retryAfterSeconds: number | undefined;

  constructor(
    readonly code: string,
    readonly status: number,
    readonly title: string,
    detail: string,
    readonly extra: Record<string, unknown> = {},
    options?: ErrorOptions,
  ) {
    super(detail, options);
    this.name = new.target.name;
  }

  /** Extra response headers (Retry-After) that belong with this answer. */
  headers(): Record<string, string> {
    return this.retryAfterSeconds === undefined ? {} : { "retry-after": String(this.retryAfterSeconds) };
  }

  /** Marks the error retryable, after `seconds` when that is known. */
  retryAfter(seconds?: number): this {
    this.retryable = true;
    this.retryAfterSeconds = seconds;
    return this;
  }
}

export class InvalidKeyError extends GatewayError {
  constructor(header: string, reason: string) {
    super("INVALID_KEY", 400, "Invalid idempotency key", `${header}: ${reason}`, { header });
  }
}

/** A key the route requires is absent or empty; `source` names it as the config does. */
export class MissingKeyError extends GatewayError {
  constructor(source: string) {
    super("MISSING_KEY", 400, "Missing key or scope field", `${source} is missing`, { source });
  }
}

/** A field the route requires (route `require`) is absent or empty; `source` names it as the config does. */
export class MissingFieldError extends GatewayError {
  constructor(source: string) {
    super("MISSING_FIELD", 400, "Missing required field", `${source} is required`, { source });
  }
}

/** A key, scope or fingerprint field holds a value that cannot be part of a key exactly. */
export class InvalidKeyFieldError extends GatewayError {
  constructor(source: string, reason: string) {
    super("INVALID_KEY_FIELD", 400, "Key field cannot be used", `${source}: ${reason}`, { source });
  }
}

/** The body cannot be read the way a key, scope or fingerprint rule needs it. */
export class InvalidBodyError extends GatewayError {
  constructor(expected: string, reason: string, options?: ErrorOptions) {
    super(
      "INVALID_BODY",
      400,
      "Request body cannot be read",
      `body is not valid ${expected}: ${reason}`,
      {},
      options,
    );
  }
}

/** `unmatched: reject`: the deployment names every path it serves, and this is none of them. */
export class NoRouteError extends GatewayError {
  constructor() {
    super("NO_ROUTE", 404, "No route", "no route of the gateway matches this method and path");
  }
}

/** A header that only a trusted proxy may set (trustProxy.headers) came from another peer. */
export class UntrustedHeaderError extends GatewayError {
  constructor(header: string) {
    super(
      "UNTRUSTED_HEADER",
      400,
      "Header set by an untrusted peer",
      `${header} is set by a trusted proxy only and this request did not come through one`,
      { header },
    );
  }
}

/** A request the gateway refuses to forward in the form it came: it would be read one way here and another upstream. */
export class AmbiguousRequestError extends GatewayError {
  constructor(reason: string, status = 400) {
    super("AMBIGUOUS_REQUEST", status, "Request refused", reason);
  }
}

/** Bytes Node's HTTP parser refused: they are not a request, so nothing of them is routed or logged. */
export class MalformedRequestError extends GatewayError {
  constructor(reason: string) {
    super("MALFORMED_REQUEST", 400, "Malformed request", `the request cannot be read as HTTP/1.1: ${reason}`);
  }
}

export class HeadersTooLargeError extends GatewayError {
  constructor() {
    super(
      "HEADERS_TOO_LARGE",
      431,
      "Request headers too large",
      "the request line and headers exceed listen.maxHeaderSize",
    );
  }
}

/** The client did not send its headers, or its whole request, in time (listen.headersTimeout, requestTimeout). */
export class RequestTimeoutError extends GatewayError {
  constructor() {
    super("REQUEST_TIMEOUT", 408, "Request timeout", "the request did not arrive in time");
    // Sent again, and at once, it may well arrive whole.
    this.retryAfter();
  }
}

export class BodyTooLargeError extends GatewayError {
  constructor(limit: number) {
    super("BODY_TOO_LARGE", 413, "Request body too large", `the body exceeds ${limit} bytes`, { limit });
  }
}

/** The key was used before with a different payload (draft-ietf-httpapi-idempotency-key-header §2.7). */
export class KeyReusedError extends GatewayError {
  constructor() {
    super(
      "KEY_REUSED",
      422,
      "Idempotency key reused with a different payload",
      "this key was first used with a different request; send a new key for a new operation",
    );
  }
}

export class InFlightError extends GatewayError {
  constructor(retryAfterSeconds: number) {
    super(
      "IN_FLIGHT",
      409,
      "Request with this key is still in flight",
      "an earlier request with this key is being processed; retry later to get its response",
      { state: "in_flight" },
    );
    this.retryAfter(retryAfterSeconds);
  }
}

/**
 * The key's outcome is unknown. Not retryable by default: under onUnknown: reject the state lasts
 * until its TTL ends or an operator resolves it, so no wait helps. The engine marks the cases where a
 * retry can succeed (a probe that may answer later, a settle time that ends).
 */
export class OutcomeUnknownError extends GatewayError {
  constructor(
    detail = "an earlier attempt reached the backend and whether it was executed is not known (its answer was lost, or said nothing of it); it is not repeated automatically, and retries get this answer until an operator resolves the key or its TTL ends",
    options?: ErrorOptions,
  ) {
    super(
      "OUTCOME_UNKNOWN",
      409,
      "Outcome of an earlier request with this key is unknown",
      detail,
      { state: "unknown" },
      options,
    );
  }
}

/**
 * This request waited on a concurrent duplicate whose answer was not stored (a status outside
 * `cache`, or no answer at all). The waiters do not each execute the operation again: they are told
 * to retry, and the retry is a fresh attempt.
 */
export class AttemptNotStoredError extends GatewayError {
  constructor() {
    super(
      "NOT_STORED",
      409,
      "The concurrent request with this key ended without a stored answer",
      "this request waited on an earlier one with the same key, which ended without an answer to share; retry to send it again",
      { state: "released" },
    );
    this.retryAfter(1);
  }
}

/**
 * Nothing was sent: the connection was refused or could not be opened. Safe to retry, so the key
 * is released. Caddy draws the same line in `tryAgain`.
 */
export class UpstreamUnreachableError extends GatewayError {
  constructor(reason: string, options?: ErrorOptions) {
    super(
      "UPSTREAM_UNREACHABLE",
      502,
      "Upstream unreachable",
      `the upstream could not be reached: ${reason}`,
      {},
      options,
    );
    // Nothing was sent and the key is free again; when the upstream is back is not known here.
    this.retryable = true;
  }
}

/** The request was sent, so the upstream may have acted on it, but no complete answer came back. */
export class UpstreamFailedError extends GatewayError {
  constructor(
    readonly timedOut: boolean,
    reason: string,
    options?: ErrorOptions,
  ) {
    super(
      timedOut ? "UPSTREAM_TIMEOUT" : "UPSTREAM_RESET",
      timedOut ? 504 : 502,
      timedOut ? "Upstream timed out" : "Upstream connection failed",
      `the upstream did not answer completely: ${reason}`,
      {},
      options,
    );
  }
}

/**
 * The upstream's answer to a protected request is larger than maxResponseSize, so it is not stored.
 * `delivered`: it was streamed to the first caller, who has it; the key is `unknown` for the rest.
 */
export class ResponseTooLargeError extends GatewayError {
  constructor(
    limit: number,
    readonly upstreamStatus: number,
    readonly delivered: boolean,
  ) {
    super(
      "RESPONSE_TOO_LARGE",
      502,
      "Upstream response too large",
      `the upstream's answer exceeds ${limit} bytes and is not stored; the request may have been executed, so the key is now in state unknown`,
      { state: "unknown", limit },
    );
  }
}

/** A protected request reached the upstream and its answer was lost: the key is now `unknown`. */
export class UpstreamOutcomeUnknownError extends GatewayError {
  /** `retryable`: the route resolves an unknown outcome on a retry (onUnknown retry or reconcile). */
  constructor(cause: UpstreamFailedError, retryable = false) {
    super(
      "UPSTREAM_OUTCOME_UNKNOWN",
      504,
      "Outcome unknown",
      `${cause.message}; the request may have been executed, so the key is now in state unknown`,
      { state: "unknown" },
      { cause },
    );
    this.retryable = retryable;
  }
}

export class StoreUnavailableError extends GatewayError {
  constructor(reason: string, options?: ErrorOptions) {
    super(
      "STORE_UNAVAILABLE",
      503,
      "Idempotency store unavailable",
      `the store cannot be reached: ${reason}`,
      {},
      options,
    );
    this.retryAfter(5);
  }
}

/**
 * The store is at its bound: the memory store holds nothing it may evict (every record is in flight
 * or of unknown outcome), or Redis is at maxmemory. Not an outage: failMode: open does not forward
 * past it.
 */
export class StoreFullError extends GatewayError {
  constructor(
    detail = "the store holds as many requests in flight as it may; retry later",
    options?: ErrorOptions,
  ) {
    super("STORE_FULL", 503, "Idempotency store full", detail, {}, options);
    this.retryAfter(5);
  }
}

/**
 * The store answered, but refused: a server that became a read-only replica, an ACL that denies a
 * command, a disk error that stops writes. Not an outage either: failMode: open does not forward
 * past it, and /readyz reports it.
 */
export class StoreRefusedError extends GatewayError {
  constructor(reason: string, options?: ErrorOptions) {
    super("STORE_REFUSED", 503, "Idempotency store refused the request", reason, {}, options);
    this.retryAfter(5);
  }
}

/** Raised at start, never on a request: the config file is invalid. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
    this.name = "ConfigError";
  }
}
