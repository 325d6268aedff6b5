import { type ErrorBodyShape, type ErrorValues, renderTemplate } from "../config/index.js";
import { GatewayError } from "../errors.js";

/** Problem type URIs are the gateway's own, so a caller can tell the gateway's 409 from the backend's. */
export const PROBLEM_TYPE_PREFIX = "urn:idempotency-gateway:problem:";

export interface Problem {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Where an error is answered: the request it belongs to and the route's error shape. */
export interface ProblemContext {
  /** The request target, as RFC 9457's `instance`. */
  instance?: string | undefined;
  requestId?: string | undefined;
  /** The route's errorBody; problem+json when absent or without a template. */
  shape?: ErrorBodyShape | undefined;
}

const INTERNAL = {
  code: "INTERNAL",
  status: 500,
  title: "Internal gateway error",
  detail: "the gateway failed to handle this request",
};

/**
 * The one place where errors become HTTP answers: RFC 9457 application/problem+json by default, or
 * the route's template. A GatewayError keeps its status, code, retry guidance and extension members;
 * anything else is a bug and gets a bare 500 that reveals nothing of it. Every body carries
 * `retryable`, and the request id when there is one.
 */
export function toProblem(err: unknown, context: ProblemContext = {}): Problem {
  const known = err instanceof GatewayError;
  const code = known ? err.code : INTERNAL.code;
  const values: ErrorValues = {
    type: PROBLEM_TYPE_PREFIX + code.toLowerCase().replaceAll("_", "-"),
    title: known ? err.title : INTERNAL.title,
    status: known ? err.status : INTERNAL.status,
    detail: known ? err.message : INTERNAL.detail,
    code,
    retryable: known ? err.retryable : false,
    retryAfter: (known ? err.retryAfterSeconds : undefined) ?? null,
    requestId: context.requestId ?? null,
    instance: context.instance ?? null,
    ...(known ? (err.extra as ErrorValues) : {}),
  };
  const shape = context.shape;
  let body: unknown;
  if (shape?.template !== undefined) {
    body = renderTemplate(shape.template, values);
  } else {
    const { retryAfter, requestId, instance, ...members } = values;
    body = {
      ...members,
      ...(instance ? { instance } : {}),
      ...(requestId ? { requestId } : {}),
      ...(retryAfter !== null ? { retryAfter } : {}),
    };
  }
  return {
    status: values.status as number,
    headers: {
      "content-type": shape?.contentType ?? "application/problem+json",
      ...(known ? err.headers() : {}),
      ...(context.requestId ? { "x-request-id": context.requestId } : {}),
    },
    body: JSON.stringify(body),
  };
}
