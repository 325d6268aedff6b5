import { isLosslessNumber, type LosslessNumber, parse as parseLossless } from "lossless-json";
import type { Source } from "../config/index.js";
import { InvalidBodyError, InvalidKeyFieldError } from "../errors.js";

/** What the engine needs to know of a request, free of any HTTP framework. */
export interface RequestView {
  method: string;
  path: string;
  /** The query string without "?", as sent. */
  rawQuery: string;
  /** Header value by lower-case name. */
  header(name: string): string | undefined;
  params: Readonly<Record<string, string>>;
  body: Uint8Array;
}

const ARRAY_INDEX = /^(0|[1-9]\d*)$/;

/** Deeper JSON than this is refused before it is parsed: parsers and encoders recurse. */
export const MAX_JSON_DEPTH = 64;

const UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Reads sources from one request, parsing the body at most once and only when a rule needs it.
 * Everything a key is made of is read exactly or refused: numbers keep every digit, text must be
 * valid UTF-8, and a name given twice (a duplicate JSON member, a repeated form field) is a 400
 * rather than a guess at which one the backend will read.
 */
export class RequestFields {
  private json?: { value: unknown };
  private form?: Map<string, string[]>;
  private query?: Map<string, string[]>;

  constructor(readonly req: RequestView) {}

  /** The value of a source; undefined when absent. A body source keeps its JSON type. */
  get(source: Source): unknown {
    switch (source.kind) {
      case "header":
        return this.req.header(source.name);
      case "query":
        this.query ??= parseUrlEncoded(this.req.rawQuery, "query string");
        return single(this.query, source);
      case "path":
        return this.req.params[source.name];
      case "form":
        this.form ??= parseUrlEncoded(decodeUtf8(this.req.body, "form"), "form body");
        return single(this.form, source);
      case "body":
        return exact(resolvePointer(this.bodyJson(), source.pointer), source.text);
    }
  }

  private bodyJson(): unknown {
    if (!this.json) {
      const text = decodeUtf8(this.req.body, "JSON");
      if (text.trim() === "") throw new InvalidBodyError("JSON", "the body is empty");
      if (nestingDepth(text) > MAX_JSON_DEPTH)
        throw new InvalidBodyError("JSON", `it is nested deeper than ${MAX_JSON_DEPTH} levels`);
      try {
        this.json = { value: parseLossless(text) };
      } catch (err) {
        throw new InvalidBodyError("JSON", (err as Error).message, { cause: err });
      }
    }
    return this.json.value;
  }
}

function decodeUtf8(bytes: Uint8Array, expected: string): string {
  try {
    return UTF8.decode(bytes);
  } catch (err) {
    throw new InvalidBodyError(expected, "it is not valid UTF-8", { cause: err });
  }
}

/**
 * application/x-www-form-urlencoded, strictly: a malformed or non-UTF-8 percent-encoding is refused,
 * where URLSearchParams would turn `%FF` and `%FE` alike into U+FFFD.
 */
function parseUrlEncoded(text: string, what: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  if (text === "") return out;
  for (const pair of text.split("&")) {
    if (pair === "") continue;
    const eq = pair.indexOf("=");
    let name: string;
    let value: string;
    try {
      name = decodeURIComponent((eq < 0 ? pair : pair.slice(0, eq)).replaceAll("+", " "));
      value = eq < 0 ? "" : decodeURIComponent(pair.slice(eq + 1).replaceAll("+", " "));
    } catch (err) {
      throw new InvalidBodyError(what, `malformed or non-UTF-8 percent-encoding in "${pair.slice(0, 40)}"`, {
        cause: err,
      });
    }
    const values = out.get(name);
    if (values) values.push(value);
    else out.set(name, [value]);
  }
  return out;
}

function single(fields: Map<string, string[]>, source: Source & { name: string }): string | undefined {
  const values = fields.get(source.name);
  if (values && values.length > 1) throw new InvalidKeyFieldError(source.text, "given more than once");
  return values?.[0];
}

/** How deep arrays and objects nest, strings skipped; counted before parsing so that no parser recurses that far. */
function nestingDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (inString) {
      if (ch === 0x5c) i++;
      else if (ch === 0x22) inString = false;
    } else if (ch === 0x22) inString = true;
    else if (ch === 0x5b || ch === 0x7b) {
      if (++depth > max) max = depth;
      if (max > MAX_JSON_DEPTH) return max;
    } else if (ch === 0x5d || ch === 0x7d) depth--;
  }
  return max;
}

/**
 * A parsed JSON value with its numbers as JS numbers, or a 400 where that would lose digits: a key
 * of 12345678901234567890 must not become the key of 12345678901234567168.
 */
function exact(value: unknown, source: string): unknown {
  if (isLosslessNumber(value)) return exactNumber(value as LosslessNumber, source);
  if (Array.isArray(value)) return value.map((v) => exact(v, source));
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      // defineProperty: a "__proto__" member stays a member.
      Object.defineProperty(out, k, {
        value: exact(v, source),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return out;
  }
  return value;
}

function exactNumber(value: LosslessNumber, source: string): number {
  const text = value.value;
  const n = Number(text);
  const refuse = () => {
    throw new InvalidKeyFieldError(
      source,
      `the number ${text.slice(0, 40)} cannot be kept exactly (more than 15 significant digits or beyond 2^53); send it as a string`,
    );
  };
  if (!Number.isFinite(n)) refuse();
  if (/^-?\d+$/.test(text)) {
    if (!Number.isSafeInteger(n)) refuse();
    return n;
  }
  const digits = (text.split(/[eE]/)[0] ?? "").replace(/[-.]/g, "").replace(/^0+/, "").replace(/0+$/, "");
  if (digits.length > 15) refuse();
  return n;
}

/** RFC 6901 evaluation: objects by own key, arrays by decimal index without leading zeros. */
export function resolvePointer(doc: unknown, tokens: readonly string[]): unknown {
  let node = doc;
  for (const token of tokens) {
    if (isLosslessNumber(node)) return undefined;
    if (Array.isArray(node)) {
      if (!ARRAY_INDEX.test(token)) return undefined;
      node = node[Number(token)];
    } else if (node !== null && typeof node === "object" && Object.hasOwn(node, token)) {
      node = (node as Record<string, unknown>)[token];
    } else {
      return undefined;
    }
  }
  return node;
}

/** Absent, null and "" all count as missing: an empty invoice number identifies nothing. */
export function isMissing(value: unknown): boolean {
  return value === undefined || value === null || value === "";
}
