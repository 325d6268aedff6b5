import { hash } from "node:crypto";

/**
 * JSON with object keys sorted at every depth, so that `{a,b}` and `{b,a}` encode alike while
 * `42` and `"42"` stay distinct. Keys are built from this encoding of a tuple and never by joining
 * strings: "a|b"+"c" and "a"+"b|c" must not collide (fastify-reply-from GHSA-v574-6498-x57v).
 * Written out directly rather than through a sorted copy: a copy made by assignment would turn a
 * `__proto__` member into a prototype and encode `{"__proto__":1}` as `{}`.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  // Loops and one string rather than map/filter/join: keys and fingerprints encode a few small
  // tuples on every request.
  if (Array.isArray(value)) {
    let out = "[";
    for (let i = 0; i < value.length; i++) out += (i === 0 ? "" : ",") + canonicalJson(value[i]);
    return `${out}]`;
  }
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).sort();
  let out = "{";
  for (const key of keys) {
    const member = obj[key];
    if (member === undefined) continue;
    out += `${out.length === 1 ? "" : ","}${JSON.stringify(key)}:${canonicalJson(member)}`;
  }
  return `${out}}`;
}

/** One-shot: no Hash object per call, and a request makes three of these. */
export function sha256(data: string | Uint8Array): string {
  return hash("sha256", data, "base64url");
}
