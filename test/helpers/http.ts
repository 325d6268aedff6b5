import { request } from "undici";

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  json(): Record<string, unknown>;
}

/** One request, body read whole; keeps the response as bytes for byte-for-byte comparisons. */
export async function send(
  url: string,
  init: {
    method?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
    signal?: AbortSignal;
  } = {},
): Promise<Reply> {
  const res = await request(url, {
    method: (init.method ?? "POST") as "POST",
    headers: init.headers ?? {},
    body: init.body ?? null,
    ...(init.signal ? { signal: init.signal } : {}),
  });
  const body = Buffer.from(await res.body.arrayBuffer());
  return {
    status: res.statusCode,
    headers: res.headers,
    body,
    json: () => JSON.parse(body.toString("utf8")) as Record<string, unknown>,
  };
}
