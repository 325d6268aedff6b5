/**
 * Where a key, scope or fingerprint value is read from: `header:NAME`, `body:/json/pointer`
 * (RFC 6901), `form:FIELD` (urlencoded body), `query:NAME`, `path:PARAM`.
 */
export type Source =
  | { kind: "header"; name: string; text: string }
  | { kind: "body"; pointer: string[]; text: string }
  | { kind: "form"; name: string; text: string }
  | { kind: "query"; name: string; text: string }
  | { kind: "path"; name: string; text: string };

export const SOURCE_KINDS = ["header", "body", "form", "query", "path"] as const;

/** Parses one source string, or returns why it is not one (worded for a config error). */
export function parseSource(text: string): Source | string {
  const colon = text.indexOf(":");
  const kind = colon < 0 ? "" : text.slice(0, colon);
  const rest = colon < 0 ? "" : text.slice(colon + 1);
  switch (kind) {
    case "header":
      if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(rest)) return `invalid header name in "${text}"`;
      return { kind, name: rest.toLowerCase(), text };
    case "body": {
      const pointer = parsePointer(rest);
      if (typeof pointer === "string") return `${pointer} in "${text}"`;
      return { kind, pointer, text };
    }
    case "form":
    case "query":
    case "path":
      if (rest === "") return `empty name in "${text}"`;
      return { kind, name: rest, text };
    default:
      return `unknown source "${text}" (expected ${SOURCE_KINDS.map((k) => `${k}:`).join(", ")})`;
  }
}

/** RFC 6901: "/a~1b/0" → ["a/b", "0"]; "~1" means "/" and "~0" means "~", decoded in that order. */
export function parsePointer(text: string): string[] | string {
  if (text === "") return "the pointer is empty (use body:/field)";
  if (!text.startsWith("/")) return 'a JSON pointer starts with "/"';
  if (/~[^01]|~$/.test(text)) return 'invalid escape ("~" must be followed by 0 or 1)';
  return text
    .slice(1)
    .split("/")
    .map((t) => t.replaceAll("~1", "/").replaceAll("~0", "~"));
}

/** A text with `{source}` placeholders, such as `/invoices?number={body:/invoiceNumber}`. */
export type Template = readonly (string | Source)[];

/** Splits a template into literal text and sources, or returns why it is not one. */
export function parseTemplate(text: string): Template | string {
  const parts: (string | Source)[] = [];
  let last = 0;
  for (const m of text.matchAll(/\{([^{}]*)\}/g)) {
    if (m.index > last) parts.push(text.slice(last, m.index));
    const source = parseSource(m[1] as string);
    if (typeof source === "string") return source;
    parts.push(source);
    last = m.index + m[0].length;
  }
  if (last < text.length) parts.push(text.slice(last));
  return parts;
}
