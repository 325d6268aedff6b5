import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { InvalidTargetError, normalizeTarget } from "../../../src/proxy/target.js";

const path = (raw: string) => normalizeTarget(raw).path;

describe("normalizeTarget", () => {
  it("leaves a path that is already normal as it is", () => {
    for (const p of ["/", "/invoices", "/invoices/", "/a/b.json", "/v1/x~y/_z-1/@me:2,3", "/a.b/c..d"]) {
      expect(path(p)).toBe(p);
    }
  });

  it("decodes unreserved characters, upper-cases other encodings, merges slashes, drops dot segments", () => {
    expect(path("/a/./b/../c//%7Ed%2f")).toBe("/a/c/~d%2F");
    expect(path("/x/%2e%2e/invoices")).toBe("/invoices");
    expect(path("/.well-known/x")).toBe("/.well-known/x");
    expect(path("/a/.")).toBe("/a/");
    expect(normalizeTarget("http://h.example/a//b?q=%2e").rawQuery).toBe("q=%2e");
  });

  it("refuses path parameters, control characters and malformed encodings", () => {
    for (const p of ["/a;b", "/a%zz", "/a%2", "/a\u0001"]) expect(() => path(p)).toThrow(InvalidTargetError);
  });

  it("gives a normal path for any accepted target, and the same path again for it", () => {
    const piece = fc.constantFrom(
      "a",
      "B",
      "/",
      "//",
      ".",
      "..",
      "%2e",
      "%2E",
      "%7e",
      "%2f",
      "%41",
      "~",
      "-",
      "@",
    );
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 12 }), (pieces) => {
        const out = path(`/${pieces.join("")}`);
        expect(out.startsWith("/")).toBe(true);
        expect(out).not.toContain("//");
        // No "." or ".." segment is left, and nothing left encoded is unreserved or in lower case.
        expect(out.split("/").some((s) => s === "." || s === "..")).toBe(false);
        for (const [, hex] of out.matchAll(/%(..)/g)) {
          expect(hex).toBe(hex?.toUpperCase());
          expect(String.fromCharCode(Number.parseInt(hex as string, 16))).not.toMatch(/[A-Za-z0-9\-._~]/);
        }
        expect(path(out)).toBe(out);
      }),
      { numRuns: 2_000 },
    );
  });
});
