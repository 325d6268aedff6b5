/**
 * Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the message, so a proxy must not
 * pass them on. Each entry with its reason, as Caddy's `hopHeaders` does.
 */
const HOP_BY_HOP = new Set([
  "connection", // lists more hop-by-hop headers; read before removal
  "keep-alive", // this connection's keep-alive parameters
  "proxy-authenticate", // a challenge from this hop
  "proxy-authorization", // credentials meant for this hop
  "proxy-connection", // non-standard but still sent by some clients
  "te", // what this hop accepts in transfer codings
  "trailer", // trailers are not forwarded
  "transfer-encoding", // the framing is re-done on each connection
  "upgrade", // protocol switches are per connection and not proxied
]);

/** What a client could spoof about where it connected from; believed from trusted proxies only. */
const FORWARDING = new Set(["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]);

const NONE: ReadonlySet<string> = new Set();

/** What nearly every message lists, made once. */
const KEEP_ALIVE: ReadonlySet<string> = new Set(["keep-alive"]);
const CLOSE: ReadonlySet<string> = new Set(["close"]);

function connectionListed(value: string | string[] | undefined): ReadonlySet<string> {
  if (value === undefined || value.length === 0) return NONE;
  if (value === "keep-alive") return KEEP_ALIVE;
  if (value === "close") return CLOSE;
  const out = new Set<string>();
  for (const v of Array.isArray(value) ? value : value ? [value] : []) {
    for (const token of v.split(",")) if (token.trim()) out.add(token.trim().toLowerCase());
  }
  return out;
}

export interface ClientInfo {
  /** The peer is a trusted proxy: its X-Forwarded-* and Forwarded headers are kept and extended. */
  trusted: boolean;
  address: string | undefined;
  proto: string;
  host: string | undefined;
  /** Sent as X-Request-Id when the request carries none. */
  requestId?: string | undefined;
}

/**
 * Headers to send upstream, from Node's flat rawHeaders (name, value, name, value…), order and
 * case kept. X-Forwarded-* and Forwarded from a peer that is not a trusted proxy are dropped and
 * the gateway's own view is sent instead. Also removed: `host` (the upstream's own is set), `expect` (Node already answered
 * 100-continue, and undici refuses it), and `content-length` when the body is re-sent from a buffer.
 */
export function upstreamRequestHeaders(
  raw: readonly string[],
  client: ClientInfo,
  buffered: boolean,
): string[] {
  let connection: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    if ((raw[i] as string).toLowerCase() === "connection") connection.push(raw[i + 1] as string);
  }
  const listed = connectionListed(connection);
  connection = [];
  const out: string[] = [];
  const forwardedFor: string[] = [];
  let proto: string | undefined;
  let host: string | undefined;
  let hasRequestId = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const value = raw[i + 1] as string;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || listed.has(lower) || lower === "host" || lower === "expect") continue;
    if (buffered && lower === "content-length") continue;
    if (lower === "x-request-id") hasRequestId = true;
    if (!client.trusted && (FORWARDING.has(lower) || lower === "forwarded")) continue;
    if (lower === "x-forwarded-for") forwardedFor.push(value);
    else if (lower === "x-forwarded-proto") proto ??= value;
    else if (lower === "x-forwarded-host") host ??= value;
    else out.push(name, value);
  }
  if (client.address) forwardedFor.push(client.address);
  if (forwardedFor.length) out.push("x-forwarded-for", forwardedFor.join(", "));
  out.push("x-forwarded-proto", proto ?? client.proto);
  if (host ?? client.host) out.push("x-forwarded-host", (host ?? client.host) as string);
  if (!hasRequestId && client.requestId) out.push("x-request-id", client.requestId);
  return out;
}

/**
 * Response headers as [name, value] pairs in the order and case the upstream sent them, hop-by-hop
 * ones removed, and `content-length` too when the body is re-framed. Takes the flat raw list
 * (name, value, …) or, where only that is at hand, a parsed object.
 */
export function responseHeaderPairs(
  headers: readonly (string | Buffer)[] | Record<string, string | string[] | undefined>,
  dropContentLength: boolean,
): [string, string][] {
  const pairs: [string, string][] = [];
  let connection: string[] | undefined;
  const add = (name: string, value: string) => {
    pairs.push([name, value]);
    if (name.length === 10 && name.toLowerCase() === "connection") {
      connection ??= [];
      connection.push(value);
    }
  };
  if (Array.isArray(headers)) {
    // latin1: one char per byte, which Node writes back as the same byte. UTF-8 decoding would
    // re-encode a UTF-8 value and turn any other byte into a character Node refuses to write.
    const text = (v: string | Buffer | undefined) => (Buffer.isBuffer(v) ? v.toString("latin1") : String(v));
    for (let i = 0; i + 1 < headers.length; i += 2) add(text(headers[i]), text(headers[i + 1]));
  } else {
    for (const [name, value] of Object.entries(headers)) {
      if (Array.isArray(value)) for (const v of value) add(name, v);
      else if (value !== undefined) add(name, value);
    }
  }
  const listed = connectionListed(connection);
  return pairs.filter(([name]) => {
    const lower = name.toLowerCase();
    return !HOP_BY_HOP.has(lower) && !listed.has(lower) && !(dropContentLength && lower === "content-length");
  });
}

/**
 * Pairs to the flat list Node's `writeHead` takes, which keeps order and repeated names; with a
 * request id, X-Request-Id is this request's, whatever the upstream sent.
 */
export function flatHeaders(pairs: readonly (readonly [string, string])[], requestId?: string): string[] {
  const out: string[] = [];
  for (const [name, value] of pairs) {
    if (requestId !== undefined && name.length === 12 && name.toLowerCase() === "x-request-id") continue;
    out.push(name, value);
  }
  if (requestId !== undefined) out.push("x-request-id", requestId);
  return out;
}
