/**
 * The shape of the gateway's own error answers on a route. By default RFC 9457 problem+json; a
 * route in front of a backend with its own error shape gives a JSON template instead, so that a
 * caller (a robot, an SDK that tells errors by an `error` member) sees one shape whoever answered.
 */

/** What a template may name, as `{name}`; the problem+json members and the extension members. */
export const ERROR_FIELDS = [
  "type",
  "title",
  "status",
  "detail",
  "code",
  "retryable",
  "retryAfter",
  "requestId",
  "instance",
  "state",
  "source",
  "header",
  "limit",
] as const;
export type ErrorField = (typeof ERROR_FIELDS)[number];
export type ErrorValues = Partial<Record<ErrorField, string | number | boolean | null>>;

export interface ErrorBodyShape {
  contentType: string;
  /** A JSON value whose strings may hold `{field}` placeholders; undefined: problem+json. */
  template: unknown;
}

const PLACEHOLDER = /\{([A-Za-z]+)\}/g;
const WHOLE = /^\{([A-Za-z]+)\}$/;
const KNOWN: ReadonlySet<string> = new Set(ERROR_FIELDS);

/** Problems with a template's placeholders, each naming where it is; empty when it is usable. */
export function templateProblems(template: unknown, at = ""): string[] {
  if (typeof template === "string") {
    return [...template.matchAll(PLACEHOLDER)]
      .filter((m) => !KNOWN.has(m[1] as string))
      .map((m) => `${at || "template"}: unknown placeholder {${m[1]}} (one of ${ERROR_FIELDS.join(", ")})`);
  }
  if (Array.isArray(template)) return template.flatMap((v, i) => templateProblems(v, `${at}[${i}]`));
  if (template !== null && typeof template === "object") {
    return Object.entries(template).flatMap(([k, v]) => templateProblems(v, at ? `${at}.${k}` : k));
  }
  return [];
}

/**
 * Fills a template. A string that is one placeholder alone takes the value with its JSON type
 * (`"{status}"` becomes 409, `"{retryable}"` false, an absent one null); placeholders inside longer
 * text are written as text, an absent one as nothing.
 */
export function renderTemplate(template: unknown, values: ErrorValues): unknown {
  if (typeof template === "string") {
    const whole = WHOLE.exec(template);
    if (whole) return values[whole[1] as ErrorField] ?? null;
    return template.replace(PLACEHOLDER, (_m, name: string) => {
      const v = values[name as ErrorField];
      return v === undefined || v === null ? "" : String(v);
    });
  }
  if (Array.isArray(template)) return template.map((v) => renderTemplate(v, values));
  if (template !== null && typeof template === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(template)) out[k] = renderTemplate(v, values);
    return out;
  }
  return template;
}
