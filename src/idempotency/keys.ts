import type { CompiledRoute } from "../config/index.js";
import { InvalidKeyFieldError, MissingFieldError, MissingKeyError } from "../errors.js";
import { canonicalJson, sha256 } from "./canonical.js";
import { parseIdempotencyKey } from "./key-header.js";
import { isMissing, type RequestFields } from "./request.js";

/** A request's identity under one route. `material` is what the operator knows; only `storeKey` is stored. */
export interface DerivedKey {
  storeKey: string;
  kind: "header" | "derived";
  material: readonly unknown[];
  scope: readonly unknown[];
  /** Hash of the caller's identity values (route `identity`); undefined when the request carries none. */
  identity: string | undefined;
  fingerprint: string;
}

/**
 * The largest key or scope value, in its canonical encoding. Key material is kept in the attempt
 * log for operators; a caller must not make the gateway hold megabytes per request for it.
 */
export const MAX_KEY_FIELD_BYTES = 1024;

function required(
  fields: RequestFields,
  source: { text: string } & Parameters<RequestFields["get"]>[0],
): unknown {
  const value = fields.get(source);
  if (isMissing(value)) throw new MissingKeyError(source.text);
  if (Buffer.byteLength(canonicalJson(value)) > MAX_KEY_FIELD_BYTES)
    throw new InvalidKeyFieldError(source.text, `the value is longer than ${MAX_KEY_FIELD_BYTES} bytes`);
  return value;
}

/** Refuses a request that lacks a field the route requires (400 naming the first one missing). */
export function checkRequired(route: CompiledRoute, fields: RequestFields): void {
  for (const source of route.settings.require) {
    if (isMissing(fields.get(source))) throw new MissingFieldError(source.text);
  }
}

/**
 * Finds the key of a request on a protected route, or undefined when the route lets it through
 * unprotected (no key header, no derivation rule, key not required). A present header wins over
 * `key.from` only on a route that names both (see RouteSettings.key). A route with `key.from` needs every field: a request
 * missing one gets 400 naming it, never a silent pass-through.
 */
export function deriveKey(route: CompiledRoute, fields: RequestFields): DerivedKey | undefined {
  const rule = route.settings.key;
  let kind: DerivedKey["kind"] | undefined;
  let material: unknown[] = [];
  if (rule.header !== false) {
    const raw = fields.req.header(rule.header.toLowerCase());
    if (raw !== undefined) {
      kind = "header";
      material = [parseIdempotencyKey(raw, rule.header)];
    }
  }
  if (kind === undefined && rule.from.length > 0) {
    kind = "derived";
    material = rule.from.map((source) => required(fields, source));
  }
  if (kind === undefined) {
    if (rule.required) throw new MissingKeyError(rule.header === false ? "key" : `header:${rule.header}`);
    return undefined;
  }
  const scope = route.settings.scope.map((source) => required(fields, source));
  const identity = identityOf(route, fields);
  return {
    storeKey: storeKeyFor(route.name, scope, kind, material, identity),
    kind,
    material,
    scope,
    identity,
    fingerprint: fingerprint(route, fields),
  };
}

/**
 * The caller's identity as part of a key: a hash of the identity headers' values, so that the
 * credential itself is never stored or logged. Undefined when none is present: callers without
 * credentials share one namespace, as nothing tells them apart.
 */
function identityOf(route: CompiledRoute, fields: RequestFields): string | undefined {
  const values = route.settings.identity.map((source) => fields.get(source) ?? null);
  return values.some((v) => !isMissing(v)) ? sha256(canonicalJson(values)) : undefined;
}

/**
 * The stored key: SHA-256 of the canonical encoding of the route, the scope values, the key material
 * and the caller's identity hash. The one place keys are made, for requests and for operators'
 * lookups alike. Without an identity the tuple is the one earlier versions stored, so that their
 * records are still found.
 */
export function storeKeyFor(
  route: string,
  scope: readonly unknown[],
  kind: DerivedKey["kind"],
  material: readonly unknown[],
  identity?: string,
): string {
  const parts: unknown[] = [route, scope, kind, material];
  if (identity !== undefined) parts.push(identity);
  return sha256(canonicalJson(parts));
}

/** Hash of the parts that must be equal for a retry to count as the same request. */
export function fingerprint(route: CompiledRoute, fields: RequestFields): string {
  return sha256(canonicalJson(fingerprintParts(route, fields).map((p) => [p.part, p.value])));
}

/** The values a fingerprint is made of, named as in the config (the body by its hash). */
export function fingerprintParts(
  route: CompiledRoute,
  fields: RequestFields,
): { part: string; value: unknown }[] {
  const { req } = fields;
  return route.settings.fingerprint.map((part) => {
    switch (part) {
      case "method":
        return { part, value: req.method };
      case "path":
        return { part, value: req.path };
      case "query":
        return { part, value: req.rawQuery };
      case "body":
        return { part, value: sha256(req.body) };
      default:
        return { part: part.text, value: fields.get(part) ?? null };
    }
  });
}

/**
 * Whether a request on this route goes through the engine. Unmatched requests (the fallback route)
 * are protected only when they carry the key header.
 */
export function isProtected(
  route: CompiledRoute,
  method: string,
  header: (name: string) => string | undefined,
): boolean {
  if (!route.protect || !route.settings.methods.has(method)) return false;
  if (!route.fallback) return true;
  const name = route.settings.key.header;
  return name !== false && header(name.toLowerCase()) !== undefined;
}
