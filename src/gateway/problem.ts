import { GatewayError } from "../errors.js";

/** Problem type URIs are the gateway's own, so a caller can tell the gateway's 409 from the backend's. */
export const PROBLEM_TYPE_PREFIX = "urn:idempotency-gateway:problem:";

export interface Problem {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * The one place where errors become HTTP answers (RFC 9457 application/problem+json). A GatewayError
 * keeps its status, code and extension members; anything else is a bug and gets a bare 500 that
 * reveals nothing of it.
 */
export function toProblem(err: unknown, instance?: string): Problem {
  if (err instanceof GatewayError) {
    const body = {
      type: PROBLEM_TYPE_PREFIX + err.code.toLowerCase().replaceAll("_", "-"),
      title: err.title,
      status: err.status,
      detail: err.message,
      code: err.code,
      ...(instance ? { instance } : {}),
      ...err.extra,
    };
    return {
      status: err.status,
      headers: { "content-type": "application/problem+json", ...err.headers() },
      body: JSON.stringify(body),
    };
  }
  return {
    status: 500,
    headers: { "content-type": "application/problem+json" },
    body: JSON.stringify({
      type: `${PROBLEM_TYPE_PREFIX}internal`,
      title: "Internal gateway error",
      status: 500,
      code: "INTERNAL",
    }),
  };
}
