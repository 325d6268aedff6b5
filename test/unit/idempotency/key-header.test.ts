import { describe, expect, it } from "vitest";
import { InvalidKeyError } from "../../../src/errors.js";
import { parseIdempotencyKey } from "../../../src/idempotency/index.js";

describe("Idempotency-Key header", () => {
  it.each([
    ["abc-123", "abc-123"],
    ['"abc-123"', "abc-123"],
    ['"with space"', "with space"],
    ['"q\\"uote"', 'q"uote'],
    ["  padded  ", "padded"],
    ["x".repeat(255), "x".repeat(255)],
    ['"abc";v=1', "abc"],
    ['"abc"; a; b=?0', "abc"],
  ])("accepts %s", (raw, key) => {
    expect(parseIdempotencyKey(raw)).toBe(key);
  });

  it.each([
    ["", "empty"],
    ['""', "empty"],
    ["x".repeat(256), "longer than 255"],
    ["caf\u00e9", "printable ASCII"],
    ["two words", "without spaces"],
    ["a, b", "sent more than once"],
    ["abc, ", "sent more than once"],
    [", abc", "sent more than once"],
    ['"abc", ""', "more than one line"],
    ['"open', "Unexpected end"],
    ['"a" "b"', "Unexpected characters"],
    ['"bad\\escape"', "backslash"],
    ['"tab\there"', "not a structured-field string"],
    ['"abc";v=', "not a structured-field string"],
  ])("rejects %j (%s)", (raw, reason) => {
    expect(() => parseIdempotencyKey(raw)).toThrow(InvalidKeyError);
    expect(() => parseIdempotencyKey(raw)).toThrow(reason);
  });
});
