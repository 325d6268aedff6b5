import { hostname } from "node:os";
import type { CompiledRoute } from "../config/index.js";
import type { RequestEvent } from "../gateway/observe.js";
import { newId } from "../ids.js";
import type { CallbackRow } from "./callback-log.js";
import { namedFields } from "./fields.js";

/** This gateway process, as CallbackLog rows name it. */
export const INSTANCE = `${hostname()}:${process.pid}`;

/** The CallbackLog row of one request, its key and scope fields named as the route reads them. */
export function callbackRow(ev: RequestEvent, route: CompiledRoute | undefined): CallbackRow {
  const key = route?.settings.key;
  const keyFields =
    ev.material === undefined || !key
      ? undefined
      : ev.keyKind === "header" && key.header !== false
        ? { [key.header.toLowerCase()]: ev.material[0] }
        : namedFields(key.from, ev.material);
  const scope =
    ev.scope === undefined || !route || ev.scope.length === 0
      ? undefined
      : namedFields(route.settings.scope, ev.scope);
  return {
    id: newId(),
    at: ev.time,
    route: ev.route,
    keyFields,
    scope,
    storeKey: ev.storeKey,
    requestId: ev.requestId,
    method: ev.method,
    path: ev.path,
    outcome: ev.outcome,
    status: ev.status,
    upstreamMs: ev.upstreamMs === undefined ? undefined : Math.round(ev.upstreamMs * 10) / 10,
    errorCode: ev.errorCode,
    instance: INSTANCE,
    payload: ev.payload,
  };
}
