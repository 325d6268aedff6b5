import { createHash } from "node:crypto";

/**
 * JSON with object keys sorted at every depth, so that `{a,b}` and `{b,a}` encode alike while
 * `42` and `"42"` stay distinct. Keys are built from this encoding of a tuple and never by joining
 * strings: "a|b"+"c" and "a"+"b|c" must not collide (fastify-reply-from GHSA-v574-6498-x57v).
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) out[key] = sortKeys((value as Record<string, unknown>)[key]);
    return out;
  }
  return value;
}

export function sha256(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("base64url");
}
