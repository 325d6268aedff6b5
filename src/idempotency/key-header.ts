import { InvalidKeyError } from "../errors.js";

const MAX_KEY_LENGTH = 255;

/**
 * Reads an Idempotency-Key header value. draft-ietf-httpapi-idempotency-key-header makes it an
 * RFC 8941 sf-string (`"abc"`); many clients send a bare token (`abc`), so both are accepted.
 * The key is 1 to 255 printable ASCII characters. Two header lines arrive joined by ", " and fail.
 */
export function parseIdempotencyKey(raw: string, header = "Idempotency-Key"): string {
  const value = raw.trim();
  let key: string;
  if (value.startsWith('"')) {
    key = "";
    let i = 1;
    for (; i < value.length; i++) {
      const ch = value.charCodeAt(i);
      if (ch === 0x5c) {
        const next = value[i + 1];
        if (next !== '"' && next !== "\\")
          throw new InvalidKeyError(header, "invalid escape in quoted string");
        key += next;
        i++;
      } else if (ch === 0x22) {
        break;
      } else if (ch < 0x20 || ch > 0x7e) {
        throw new InvalidKeyError(header, "only printable ASCII characters are allowed");
      } else {
        key += value[i];
      }
    }
    if (i >= value.length) throw new InvalidKeyError(header, "unterminated quoted string");
    if (i !== value.length - 1)
      throw new InvalidKeyError(header, "unexpected characters after the quoted string");
  } else {
    if (!/^[\x21-\x7e]*$/.test(value)) {
      throw new InvalidKeyError(
        header,
        "only printable ASCII characters without spaces are allowed (or send a quoted string)",
      );
    }
    key = value;
  }
  if (key.length === 0) throw new InvalidKeyError(header, "the key is empty");
  if (key.length > MAX_KEY_LENGTH)
    throw new InvalidKeyError(header, `the key is longer than ${MAX_KEY_LENGTH} characters`);
  return key;
}
