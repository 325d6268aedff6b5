import { connect } from "node:net";

export interface RawReply {
  status: number;
  /** Header lines as sent, lower-case names. */
  headers: [string, string][];
  head: Buffer;
  body: Buffer;
}

/**
 * Sends bytes exactly as given on a fresh connection and reads until the server closes it: for
 * request targets and header spellings that an HTTP client library would normalize or refuse.
 * The request should carry `Connection: close`.
 */
export function rawRequest(url: string, bytes: string | Buffer): Promise<RawReply> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port) });
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", reject);
    socket.on("end", () => {
      const all = Buffer.concat(chunks);
      const split = all.indexOf("\r\n\r\n");
      const head = all.subarray(0, split < 0 ? all.length : split);
      const lines = head.toString("latin1").split("\r\n");
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(lines[0] ?? "")?.[1] ?? 0);
      const headers = lines.slice(1).map((l): [string, string] => {
        const colon = l.indexOf(":");
        return [l.slice(0, colon).toLowerCase(), l.slice(colon + 1).trim()];
      });
      resolve({ status, headers, head, body: split < 0 ? Buffer.alloc(0) : all.subarray(split + 4) });
    });
    socket.write(bytes);
  });
}

/** A request as bytes, with Content-Length and Connection: close filled in. */
export function rawHttp(
  method: string,
  target: string,
  headers: Record<string, string> | [string, string][] = {},
  body = "",
): string {
  const pairs = Array.isArray(headers) ? headers : Object.entries(headers);
  const lines = [
    `${method} ${target} HTTP/1.1`,
    "Host: gateway.test",
    ...pairs.map(([k, v]) => `${k}: ${v}`),
  ];
  if (body || method === "POST") lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  lines.push("Connection: close");
  return `${lines.join("\r\n")}\r\n\r\n${body}`;
}
