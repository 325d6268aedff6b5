import type { RouteTable, Source } from "../config/index.js";
import { BodyTooLargeError } from "../errors.js";
import { normalizeTarget, type Target } from "../proxy/target.js";
import { checkRequired, deriveKey, fingerprintParts, isProtected } from "./keys.js";
import { RequestFields, type RequestView } from "./request.js";

export interface ExplainInput {
  method: string;
  /** Path with an optional query string. */
  url: string;
  headers: Record<string, string>;
  body: Uint8Array;
}

export interface Explanation {
  route: string;
  pattern: string;
  params: Record<string, string>;
  protected: boolean;
  key?: {
    kind: "header" | "derived";
    sources: { source: string; value: unknown }[];
    scope: { source: string; value: unknown }[];
    /** Hash of the caller's identity values; absent when the request carries none. */
    identity?: string;
    storeKey: string;
  };
  fingerprint?: { part: string; value: unknown }[];
  /** Why the gateway would answer this request itself (400, 413) instead of forwarding it. */
  error?: unknown;
}

const zip = (sources: readonly Source[], values: readonly unknown[]) =>
  sources.map((s, i) => ({ source: s.text, value: values[i] }));

/** What the gateway would do with one request: the route, the key material, the fingerprint, or the error. */
export function explain(table: RouteTable, input: ExplainInput): Explanation {
  const method = input.method.toUpperCase();
  let target: Target;
  try {
    target = normalizeTarget(input.url);
  } catch (err) {
    return { route: "", pattern: "", params: {}, protected: false, error: err };
  }
  const { path, rawQuery } = target;
  const lower = Object.fromEntries(Object.entries(input.headers).map(([k, v]) => [k.toLowerCase(), v]));
  const header = (name: string) => lower[name];
  const { route, params } = table.match(method, path);
  const out: Explanation = {
    route: route.name,
    pattern: route.pattern,
    params,
    protected: isProtected(route, method, header),
  };
  if (!out.protected) return out;
  const view: RequestView = {
    method,
    path,
    rawQuery,
    header,
    params,
    body: input.body,
  };
  try {
    if (input.body.byteLength > route.settings.maxBodySize)
      throw new BodyTooLargeError(route.settings.maxBodySize);
    const fields = new RequestFields(view);
    checkRequired(route, fields);
    const key = deriveKey(route, fields);
    out.fingerprint = fingerprintParts(route, fields);
    if (key) {
      const keySources =
        key.kind === "header"
          ? [{ source: `header:${route.settings.key.header}`, value: key.material[0] }]
          : zip(route.settings.key.from, key.material);
      out.key = {
        kind: key.kind,
        sources: keySources,
        scope: zip(route.settings.scope, key.scope),
        ...(key.identity ? { identity: key.identity } : {}),
        storeKey: key.storeKey,
      };
    }
  } catch (err) {
    out.error = err;
  }
  return out;
}
