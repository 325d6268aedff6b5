import type { Source } from "../config/index.js";
import { InvalidBodyError } from "../errors.js";

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

/** Reads sources from one request, parsing the body at most once and only when a rule needs it. */
export class RequestFields {
  private json?: { value: unknown };
  private form?: URLSearchParams;
  private query?: URLSearchParams;

  constructor(readonly req: RequestView) {}

  /** The value of a source; undefined when absent. A body source keeps its JSON type. */
  get(source: Source): unknown {
    switch (source.kind) {
      case "header":
        return this.req.header(source.name);
      case "query":
        this.query ??= new URLSearchParams(this.req.rawQuery);
        return this.query.get(source.name) ?? undefined;
      case "path":
        return this.req.params[source.name];
      case "form":
        this.form ??= new URLSearchParams(Buffer.from(this.req.body).toString("utf8"));
        return this.form.get(source.name) ?? undefined;
      case "body":
        return resolvePointer(this.bodyJson(), source.pointer);
    }
  }

  private bodyJson(): unknown {
    if (!this.json) {
      const text = Buffer.from(this.req.body).toString("utf8");
      if (text.trim() === "") throw new InvalidBodyError("JSON", "the body is empty");
      try {
        this.json = { value: JSON.parse(text) };
      } catch (err) {
        throw new InvalidBodyError("JSON", (err as Error).message, { cause: err });
      }
    }
    return this.json.value;
  }
}

/** RFC 6901 evaluation: objects by own key, arrays by decimal index without leading zeros. */
export function resolvePointer(doc: unknown, tokens: readonly string[]): unknown {
  let node = doc;
  for (const token of tokens) {
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
