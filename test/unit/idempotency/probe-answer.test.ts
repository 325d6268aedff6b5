import { describe, expect, it } from "vitest";
import { parseConfig } from "../../../src/config/index.js";
import { judgeProbe } from "../../../src/idempotency/probe-answer.js";

function rule(replay?: Record<string, unknown>) {
  const config = parseConfig({
    upstream: { url: "http://127.0.0.1:9000" },
    defaults: {
      onUnknown: "reconcile",
      reconcile: { probe: { path: "/invoices?n={body:/n}" }, found: [200], notFound: [404], replay },
    },
  });
  if (!config.defaults.reconcile) throw new Error("no rule");
  return config.defaults.reconcile;
}

const answer = (status: number, body: string) => ({
  status,
  headers: [
    ["Content-Type", "application/json; charset=utf-8"],
    ["Content-Length", String(body.length)],
    ["X-Trace", "t1"],
  ] as [string, string][],
  body: new TextEncoder().encode(body),
});

describe("reading a probe's answer", () => {
  it("replays the whole answer by default, marked reconciled", () => {
    const v = judgeProbe(rule(), answer(200, "[1]"));
    expect(v).toMatchObject({ kind: "found", response: { status: 200, reconciled: true } });
  });

  it("replays the part and status the rule names, numbers digit for digit", () => {
    const v = judgeProbe(
      rule({ status: 201, body: "/0" }),
      answer(200, '[{"id":"INV-1","amount":12345678901234567890.10}]'),
    );
    if (v.kind !== "found") throw new Error(v.kind);
    expect(v.response.status).toBe(201);
    expect(Buffer.from(v.response.body).toString()).toBe('{"id":"INV-1","amount":12345678901234567890.10}');
    expect(v.response.headers).toEqual([
      ["content-type", "application/json"],
      ["X-Trace", "t1"],
    ]);
  });

  it("reads an empty search result as not found, and a body that is not JSON as unclear", () => {
    expect(judgeProbe(rule({ body: "/0" }), answer(200, "[]")).kind).toBe("notFound");
    expect(judgeProbe(rule({ body: "/0" }), answer(200, "<html>")).kind).toBe("unclear");
    expect(judgeProbe(rule(), answer(404, "{}")).kind).toBe("notFound");
    expect(judgeProbe(rule(), answer(500, "{}"))).toEqual({
      kind: "unclear",
      reason: "the reconciliation probe answered 500",
    });
  });
});
