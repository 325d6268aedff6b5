import { randomUUID } from "node:crypto";

/**
 * A random UUID as one flat string. Node builds `randomUUID()` by concatenating twenty pieces,
 * which V8 keeps as a tree of about twenty heap objects (about 490 bytes) until a character of it
 * is read. Ids outlive their request (an attempt's token in its record, a request id in the
 * attempt log), so each is flattened once here, into one string of about 60 bytes.
 */
export function newId(): string {
  const id = randomUUID();
  id.charCodeAt(0); // reading a character makes V8 flatten the string in place
  return id;
}
