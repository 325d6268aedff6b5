import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parseConfig, RouteTable } from "../../../src/config/index.js";
import { canonicalJson, deriveKey, RequestFields } from "../../../src/idempotency/index.js";

const table = new RouteTable(
  parseConfig({
    upstream: { url: "http://127.0.0.1:1" },
    routes: [
      { name: "r", match: { path: "/x" }, key: { from: ["body:/a", "body:/b"] }, scope: ["header:T"] },
    ],
  }),
);
const route = table.routes[0] as NonNullable<(typeof table.routes)[0]>;

function keyOf(body: unknown, tenant: string): string | undefined {
  const fields = new RequestFields({
    method: "POST",
    path: "/x",
    rawQuery: "",
    params: {},
    body: Buffer.from(JSON.stringify(body)),
    header: (name) => (name === "t" ? tenant : undefined),
  });
  return deriveKey(route, fields)?.storeKey;
}

const value = fc.oneof(
  fc.string({ minLength: 1 }),
  fc.integer(),
  fc.boolean(),
  fc.dictionary(fc.string(), fc.oneof(fc.string(), fc.integer()), { minKeys: 1 }),
);

describe("key derivation properties", () => {
  it("is deterministic, and ignores fields that are not part of the key", () => {
    fc.assert(
      fc.property(value, value, fc.string({ minLength: 1 }), fc.string(), (a, b, tenant, noise) => {
        expect(keyOf({ a, b, noise }, tenant)).toBe(keyOf({ noise: `${noise}!`, b, a }, tenant));
      }),
    );
  });

  it("never collides for distinct field tuples, however the strings are cut", () => {
    fc.assert(
      fc.property(
        fc.tuple(value, value, fc.string({ minLength: 1 })),
        fc.tuple(value, value, fc.string({ minLength: 1 })),
        ([a1, b1, t1], [a2, b2, t2]) => {
          fc.pre(canonicalJson([a1, b1, t1]) !== canonicalJson([a2, b2, t2]));
          expect(keyOf({ a: a1, b: b1 }, t1)).not.toBe(keyOf({ a: a2, b: b2 }, t2));
        },
      ),
    );
  });

  it("does not let separators inside values shift the boundary between fields", () => {
    const sep = fc.constantFrom("|", ":", ",", '"', "\\", "\u0000", "][");
    fc.assert(
      fc.property(fc.string({ minLength: 1 }), fc.string(), fc.string(), sep, (x, y, z, s) => {
        // ["x<s>y", "z"] and ["x", "y<s>z"] join to the same text with <s> as the separator.
        expect(keyOf({ a: `${x}${s}${y}`, b: z || "-" }, "t")).not.toBe(
          keyOf({ a: x, b: `${y}${s}${z || "-"}` }, "t"),
        );
      }),
    );
    expect(keyOf({ a: "a|b", b: "c" }, "t")).not.toBe(keyOf({ a: "a", b: "b|c" }, "t"));
  });

  it("keeps a JSON value's type: 42 and the string 42 are different keys", () => {
    fc.assert(
      fc.property(fc.integer(), (n) => {
        expect(keyOf({ a: n, b: 1 }, "t")).not.toBe(keyOf({ a: String(n), b: 1 }, "t"));
      }),
    );
  });

  it("keeps tenants apart for every key", () => {
    fc.assert(
      fc.property(value, value, fc.string({ minLength: 1 }), fc.string({ minLength: 1 }), (a, b, t1, t2) => {
        fc.pre(t1 !== t2);
        expect(keyOf({ a, b }, t1)).not.toBe(keyOf({ a, b }, t2));
      }),
    );
  });
});

/** canonicalJson as it was first written (map, filter, join): the encoding stored keys were made with. */
function canonicalJsonAsFirstWritten(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJsonAsFirstWritten).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const obj = value as Record<string, unknown>;
    const members = Object.keys(obj)
      .sort()
      .filter((key) => obj[key] !== undefined)
      .map((key) => `${JSON.stringify(key)}:${canonicalJsonAsFirstWritten(obj[key])}`);
    return `{${members.join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

describe("canonicalJson", () => {
  it("encodes every JSON value (and undefined members) exactly as the first version did, so stored keys still match", () => {
    const withUndefined = fc.letrec((tie) => ({
      value: fc.oneof(
        { depthSize: "small" },
        fc.jsonValue({ maxDepth: 2 }),
        fc.constant(undefined),
        fc.array(tie("value"), { maxLength: 4 }),
        fc.dictionary(fc.oneof(fc.string(), fc.constantFrom("__proto__", "constructor", "")), tie("value"), {
          maxKeys: 4,
        }),
      ),
    })).value;
    fc.assert(
      fc.property(withUndefined, (value) => {
        expect(canonicalJson(value)).toBe(canonicalJsonAsFirstWritten(value));
      }),
      { numRuns: 2000 },
    );
  });
});
