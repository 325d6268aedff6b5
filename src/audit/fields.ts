import type { Source } from "../config/index.js";

/**
 * The name a key or scope field goes by in the CallbackLog: the last segment of a body pointer, or
 * the header, form, query or path parameter name (`body:/invoice/number` is `number`). Two sources
 * that would share a name keep their full source text instead.
 */
export function fieldNames(sources: readonly Source[]): string[] {
  const short = sources.map((s) =>
    s.kind === "body" ? (s.pointer[s.pointer.length - 1] ?? s.text) : s.name,
  );
  return short.map((name, i) =>
    short.indexOf(name) === short.lastIndexOf(name) ? name : (sources[i] as Source).text,
  );
}

/** {name: value} for the values read from `sources`, in order. */
export function namedFields(sources: readonly Source[], values: readonly unknown[]): Record<string, unknown> {
  const names = fieldNames(sources);
  const out: Record<string, unknown> = {};
  values.forEach((value, i) => {
    out[names[i] ?? String(i)] = value;
  });
  return out;
}
