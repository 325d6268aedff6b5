import { describe, expect, it } from "vitest";
import { responseHeaderPairs, upstreamRequestHeaders } from "../../../src/proxy/index.js";

describe("upstream request headers", () => {
  const client = { trusted: false, address: "10.0.0.9", proto: "http", host: "gw.example" };

  it("drops hop-by-hop headers, including those the Connection header names", () => {
    const out = upstreamRequestHeaders(
      [
        "Host",
        "gw",
        "Connection",
        "keep-alive, X-Hop",
        "X-Hop",
        "1",
        "Keep-Alive",
        "5",
        "TE",
        "trailers",
        "X-Keep",
        "2",
      ],
      client,
      false,
    );
    expect(out).toEqual([
      "X-Keep",
      "2",
      "x-forwarded-for",
      "10.0.0.9",
      "x-forwarded-proto",
      "http",
      "x-forwarded-host",
      "gw.example",
    ]);
  });

  const forwarding = [
    "X-Forwarded-For",
    "1.1.1.1",
    "X-Forwarded-Proto",
    "https",
    "X-Forwarded-Host",
    "public.example",
    "Forwarded",
    "for=1.1.1.1",
  ];

  it("overwrites the forwarding headers of a peer that is not a trusted proxy", () => {
    expect(upstreamRequestHeaders(forwarding, client, false)).toEqual([
      "x-forwarded-for",
      "10.0.0.9",
      "x-forwarded-proto",
      "http",
      "x-forwarded-host",
      "gw.example",
    ]);
  });

  it("appends to a trusted proxy's X-Forwarded-For and keeps its proto, host and Forwarded", () => {
    const out = upstreamRequestHeaders(forwarding, { ...client, trusted: true }, false);
    expect(out).toEqual([
      "Forwarded",
      "for=1.1.1.1",
      "x-forwarded-for",
      "1.1.1.1, 10.0.0.9",
      "x-forwarded-proto",
      "https",
      "x-forwarded-host",
      "public.example",
    ]);
  });

  it("drops Content-Length only when the body is re-sent from a buffer, and always Expect", () => {
    const raw = ["Content-Length", "3", "Expect", "100-continue"];
    expect(upstreamRequestHeaders(raw, client, true)).not.toContain("Content-Length");
    expect(upstreamRequestHeaders(raw, client, false)).toContain("Content-Length");
    expect(upstreamRequestHeaders(raw, client, false)).not.toContain("Expect");
  });
});

describe("response headers", () => {
  it("keeps the raw order and case of the upstream's headers", () => {
    expect(
      responseHeaderPairs(["X-B", "2", "Connection", "X-Hop", "X-Hop", "1", "X-A", "1", "X-B", "3"], false),
    ).toEqual([
      ["X-B", "2"],
      ["X-A", "1"],
      ["X-B", "3"],
    ]);
  });

  it("keeps repeated headers as separate pairs and drops framing", () => {
    expect(
      responseHeaderPairs(
        { "set-cookie": ["a=1", "b=2"], "transfer-encoding": "chunked", "content-length": "3", etag: '"x"' },
        true,
      ),
    ).toEqual([
      ["set-cookie", "a=1"],
      ["set-cookie", "b=2"],
      ["etag", '"x"'],
    ]);
  });
});
