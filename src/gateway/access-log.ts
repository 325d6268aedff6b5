import { type Logger, pino } from "pino";
import { flushOnWarning } from "./log-lines.js";
import type { RequestEvent } from "./observe.js";

const MESSAGE = "protected request";
const INFO = 30;

/** The access log's fields of one request, as `logger.info(fields, "protected request")` takes them. */
export function accessFields(ev: RequestEvent): Record<string, unknown> {
  return {
    requestId: ev.requestId,
    route: ev.route,
    method: ev.method,
    path: ev.path,
    key: ev.storeKey,
    outcome: ev.outcome,
    status: ev.status,
    upstreamMs: ev.upstreamMs === undefined ? undefined : Math.round(ev.upstreamMs * 10) / 10,
    totalMs: Math.round(ev.totalMs * 10) / 10,
  };
}

/** The line pino writes for `accessFields(ev)`, built directly; `time` and `bindings` are the logger's. */
function render(ev: RequestEvent, time: string, bindings: string): string {
  let line = `{"level":${INFO}${time}${bindings},"requestId":${JSON.stringify(ev.requestId)},"route":${JSON.stringify(ev.route)},"method":${JSON.stringify(ev.method)},"path":${JSON.stringify(ev.path)}`;
  if (ev.storeKey !== undefined) line += `,"key":${JSON.stringify(ev.storeKey)}`;
  line += `,"outcome":${JSON.stringify(ev.outcome)},"status":${ev.status}`;
  if (ev.upstreamMs !== undefined) line += `,"upstreamMs":${Math.round(ev.upstreamMs * 10) / 10}`;
  return `${line},"totalMs":${Math.round(ev.totalMs * 10) / 10},"msg":"${MESSAGE}"}\n`;
}

/** A request as the check below renders it both ways: every field present, strings that need escaping. */
const SAMPLE: RequestEvent = {
  time: 0,
  requestId: 'r"\\1',
  route: 'route "a" \\ é',
  method: "POST",
  path: '/p/"q"',
  storeKey: "k",
  outcome: "executed",
  status: 201,
  upstreamMs: 12.345,
  totalMs: 13.06,
};

/**
 * Writes the line per protected request. pino's generic serializer (a loop over the fields, its
 * escaping, its hooks) cost several times what building the line does, in every request's CPU
 * time; the line here is the same, byte for byte. A logger this does not match (its own formatters,
 * serializers, mixin, hooks, redaction, or a destination that wants pino's metadata) is found once,
 * here, and gets `logger.info` instead.
 */
export function accessLog(logger: Logger): (ev: RequestEvent) => void {
  const { asJsonSym, chindingsSym, streamSym, timeSym, needsMetadataGsym, mixinSym, hooksSym } = pino.symbols;
  // pino's own internals, through the symbols it exports for this kind of use.
  const internals = logger as unknown as Record<symbol, unknown>;
  const stream = internals[streamSym] as { write(line: string): unknown; [k: symbol]: unknown } | undefined;
  const bindings = internals[chindingsSym];
  const time = internals[timeSym] as (() => string) | undefined;
  const asJson = internals[asJsonSym] as
    | ((obj: object, msg: string, level: number, time: string) => string)
    | undefined;
  const hooks = internals[hooksSym] as { logMethod?: unknown; streamWrite?: unknown } | undefined;
  const fallback = (ev: RequestEvent) => logger.info(accessFields(ev), MESSAGE);
  // What pino does outside its serializer: a mixin's fields, hooks (createLogger's own only flushes
  // on warnings), and a destination that is told each line's level.
  const plain =
    !internals[mixinSym] &&
    !hooks?.streamWrite &&
    (!hooks?.logMethod || hooks.logMethod === flushOnWarning) &&
    stream !== undefined &&
    !stream[needsMetadataGsym];
  if (!plain || typeof bindings !== "string" || !time || !asJson) return fallback;
  const fixed = ',"time":0';
  if (asJson.call(logger, accessFields(SAMPLE), MESSAGE, INFO, fixed) !== render(SAMPLE, fixed, bindings))
    return fallback;
  return (ev) => {
    if (logger.levelVal <= INFO) stream.write(render(ev, time.call(logger), bindings));
  };
}
