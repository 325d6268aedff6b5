import { GatewayError } from "../errors.js";

/** A request target the gateway will not route: it could be read one way here and another way upstream. */
export class InvalidTargetError extends GatewayError {
  constructor(reason: string) {
    super("INVALID_PATH", 400, "Invalid request target", reason);
  }
}

export interface Target {
  /** The normalized path: what routes match and what is forwarded. */
  path: string;
  /** The query string without "?", as sent; "" when there is none. */
  rawQuery: string;
}

const UNRESERVED = /[A-Za-z0-9\-._~]/;
const HEX = /^[0-9A-Fa-f]{2}$/;
const ABSOLUTE_FORM = /^https?:\/\/[^/?#]*/i;

/**
 * The request target as routes see it and as it is forwarded, so that a path cannot be spelled past
 * a route: RFC 3986 §6.2.2 normalization (percent-encodings of unreserved characters decoded, other
 * encodings upper-cased, then dot segments removed), duplicate slashes merged, an absolute-form target
 * reduced to its path (RFC 9112 §3.2.2), a fragment dropped. What backends disagree about is refused
 * rather than guessed: `;` path parameters (Tomcat drops them, most others do not), control
 * characters and malformed encodings. (Node's HTTP parser already refuses a backslash, which IIS
 * would read as "/".)
 */
export function normalizeTarget(raw: string): Target {
  let target = raw;
  if (!target.startsWith("/")) {
    const absolute = ABSOLUTE_FORM.exec(target);
    if (!absolute) throw new InvalidTargetError('the request target must start with "/"');
    target = target.slice(absolute[0].length) || "/";
    if (!target.startsWith("/")) target = `/${target}`;
  }
  const hash = target.indexOf("#");
  if (hash >= 0) target = target.slice(0, hash);
  const q = target.indexOf("?");
  const rawPath = q < 0 ? target : target.slice(0, q);
  const rawQuery = q < 0 ? "" : target.slice(q + 1);
  return { path: normalizePath(rawPath), rawQuery };
}

/** Characters that need no decoding or refusal, and that no backend reads differently. */
const PLAIN = /^[A-Za-z0-9\-._~!$&'()*+,=:@/]*$/;

function normalizePath(raw: string): string {
  // Most paths are already normal: nothing encoded, no "//", no segment starting with a dot.
  if (PLAIN.test(raw) && !raw.includes("//") && !raw.includes("/.")) return raw;
  let decoded = "";
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i] as string;
    const code = raw.charCodeAt(i);
    if (code <= 0x20 || code >= 0x7f)
      throw new InvalidTargetError("the path holds a control or non-ASCII character");
    if (ch === ";") throw new InvalidTargetError('path parameters (";") are not accepted');
    if (ch !== "%") {
      decoded += ch;
      continue;
    }
    const hex = raw.slice(i + 1, i + 3);
    if (!HEX.test(hex)) throw new InvalidTargetError("the path holds a malformed percent-encoding");
    const char = String.fromCharCode(Number.parseInt(hex, 16));
    decoded += UNRESERVED.test(char) ? char : `%${hex.toUpperCase()}`;
    i += 2;
  }
  return removeDotSegments(decoded.replace(/\/{2,}/g, "/"));
}

/** RFC 3986 §5.2.4 on a path that starts with "/": "." segments dropped, ".." removes its parent. */
function removeDotSegments(path: string): string {
  const out: string[] = [];
  const segments = path.split("/").slice(1);
  segments.forEach((segment, i) => {
    const last = i === segments.length - 1;
    if (segment === ".") {
      if (last) out.push("");
    } else if (segment === "..") {
      out.pop();
      if (last) out.push("");
    } else {
      out.push(segment);
    }
  });
  return `/${out.join("/")}`;
}
