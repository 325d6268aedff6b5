import { parse as parseLossless, stringify as stringifyLossless } from "lossless-json";
import type { ReconcileRule } from "../config/index.js";
import type { StoredResponse } from "../store/types.js";
import { resolvePointer } from "./request.js";

/** What a reconciliation probe's answer says of the operation of unknown outcome. */
export type ProbeVerdict =
  | { kind: "found"; response: StoredResponse }
  | { kind: "notFound" }
  | { kind: "unclear"; reason: string };

/**
 * Reads a probe's answer by the rule. A found status is replayed as `reconcile.replay` says: with
 * its status, and with the part of the probe's body that `replay.body` points at (a search that
 * answers 200 with a list: `/0` is the operation's own record, and an empty list is "not found").
 * Numbers are kept digit for digit; a body that is not JSON leaves the outcome unclear.
 */
export function judgeProbe(rule: ReconcileRule, answer: StoredResponse): ProbeVerdict {
  if (rule.notFound.includes(answer.status)) return { kind: "notFound" };
  if (!rule.found.includes(answer.status)) {
    return { kind: "unclear", reason: `the reconciliation probe answered ${answer.status}` };
  }
  const replay = rule.replay;
  const status = replay?.status ?? answer.status;
  if (replay?.body === undefined) return { kind: "found", response: { ...answer, status, reconciled: true } };
  let doc: unknown;
  try {
    doc = parseLossless(Buffer.from(answer.body).toString("utf8"));
  } catch (err) {
    return {
      kind: "unclear",
      reason: `the reconciliation probe's body is not JSON (${err instanceof Error ? err.message : String(err)})`,
    };
  }
  const part = resolvePointer(doc, replay.body.tokens);
  if (part === undefined) return { kind: "notFound" };
  const headers: [string, string][] = [["content-type", "application/json"]];
  for (const [name, value] of answer.headers) {
    if (!/^content-/i.test(name)) headers.push([name, value]);
  }
  const body = new TextEncoder().encode(stringifyLossless(part) ?? "null");
  return { kind: "found", response: { status, headers, body, reconciled: true } };
}
