import { parseItem } from "structured-headers";
import { InvalidKeyError } from "../errors.js";

const MAX_KEY_LENGTH = 255;

/**
 * Reads an Idempotency-Key header value. draft-ietf-httpapi-idempotency-key-header makes it an
 * RFC 8941 sf-string (`"abc"`, parameters allowed and ignored); many clients send a bare token
 * (`abc`), so that is accepted too. The key is 1 to 255 printable ASCII characters. A bare key with
 * a comma is refused: two header lines arrive joined by ", ", and which one is the key is a guess.
 */
export function parseIdempotencyKey(raw: string, header = "Idempotency-Key"): string {
  const value = raw.trim();
  let key: string;
  if (value.startsWith('"')) {
    let item: ReturnType<typeof parseItem>;
    try {
      item = parseItem(value);
    } catch (err) {
      throw new InvalidKeyError(
        header,
        `not a structured-field string (${(err as Error).message}); sent on more than one line?`,
      );
    }
    if (typeof item[0] !== "string") throw new InvalidKeyError(header, "not a structured-field string");
    key = item[0];
  } else {
    if (value.includes(",")) {
      throw new InvalidKeyError(
        header,
        "the header was sent more than once, or the key holds a comma (send it as a quoted string)",
      );
    }
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
