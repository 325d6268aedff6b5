import { afterEach, describe, expect, it } from "vitest";
import { type RunningDemoBackend, startDemoBackend } from "../../src/demo/index.js";
import { send } from "../helpers/http.js";

let backend: RunningDemoBackend | undefined;
afterEach(async () => {
  await backend?.close();
  backend = undefined;
});

const invoice = (n: string) => ({
  body: JSON.stringify({ invoiceNumber: n, transactionId: "T", amount: 5 }),
});

describe("demo backend", () => {
  it("creates a new invoice on every POST and counts duplicates per business key", async () => {
    backend = await startDemoBackend({ port: 0 });
    const a = await send(`${backend.url}/invoices`, invoice("A"));
    const b = await send(`${backend.url}/invoices`, invoice("A"));
    await send(`${backend.url}/invoices`, invoice("B"));
    expect(a.status).toBe(201);
    expect(a.json().id).not.toBe(b.json().id);
    expect((await send(`${backend.url}/stats`, { method: "GET" })).json()).toEqual({
      executions: 3,
      distinctKeys: 2,
      duplicates: 1,
    });
  });

  it("takes robots' callbacks and form bodies, and JSON that curl -d labels as a form", async () => {
    backend = await startDemoBackend({ port: 0 });
    const form = { "content-type": "application/x-www-form-urlencoded" };
    const callback = await send(`${backend.url}/callbacks/robot-7`, {
      body: JSON.stringify({ invoiceNumber: "C-1", transactionID: "TX-1", amount: "5" }),
    });
    const formBody = await send(`${backend.url}/invoices`, {
      headers: form,
      body: "invoiceNumber=F-1&transactionId=T-2&amount=7",
    });
    const curlStyle = await send(`${backend.url}/invoices`, { headers: form, ...invoice("J-1") });
    expect(callback.json()).toMatchObject({ invoiceNumber: "C-1", transactionId: "TX-1" });
    expect(formBody.json()).toMatchObject({ invoiceNumber: "F-1", transactionId: "T-2", amount: "7" });
    expect(curlStyle.json()).toMatchObject({ invoiceNumber: "J-1", amount: 5 });
  });

  it("looks invoices up by number, 404 when there is none", async () => {
    backend = await startDemoBackend({ port: 0 });
    await send(`${backend.url}/invoices`, invoice("N-1"));
    const found = await send(`${backend.url}/invoices?number=N-1`, { method: "GET" });
    const missing = await send(`${backend.url}/invoices?number=N-2`, { method: "GET" });
    expect(found.status).toBe(200);
    expect(found.json()).toMatchObject([{ invoiceNumber: "N-1" }]);
    expect(missing.status).toBe(404);
  });

  it("narrows a lookup to one transaction, so that a probe can name the whole business key", async () => {
    backend = await startDemoBackend({ port: 0 });
    await send(`${backend.url}/invoices`, invoice("N-1"));
    const other = await send(`${backend.url}/invoices?number=N-1&transactionId=T-other`, { method: "GET" });
    const same = await send(`${backend.url}/invoices?number=N-1&transactionId=T`, { method: "GET" });
    expect(other.status).toBe(404);
    expect(same.json()).toMatchObject([{ invoiceNumber: "N-1", transactionId: "T" }]);
  });

  it("answers 400 to a body that is not an invoice", async () => {
    backend = await startDemoBackend({ port: 0 });
    expect((await send(`${backend.url}/invoices`, { body: "nope" })).status).toBe(400);
    expect((await send(`${backend.url}/invoices`, { body: "{}" })).status).toBe(400);
    expect(backend.stats().executions).toBe(0);
  });

  it("--latency delays every POST by at least the given time", async () => {
    backend = await startDemoBackend({ port: 0, latencyMs: [150, 150] });
    const started = performance.now();
    await send(`${backend.url}/invoices`, invoice("L"));
    expect(performance.now() - started).toBeGreaterThanOrEqual(145);
  });

  it("--fail-rate answers 503 without committing", async () => {
    backend = await startDemoBackend({ port: 0, failRate: 1 });
    const res = await send(`${backend.url}/invoices`, invoice("F"));
    expect(res.status).toBe(503);
    expect(backend.stats().executions).toBe(0);
  });

  it("--fail-after-commit with 500: commits, then answers 500", async () => {
    backend = await startDemoBackend({ port: 0, failAfterCommit: 1, failMode: "500" });
    const res = await send(`${backend.url}/invoices`, invoice("C"));
    expect(res.status).toBe(500);
    expect(backend.stats().executions).toBe(1);
  });

  it("--fail-after-commit with drop: commits, then cuts the connection", async () => {
    backend = await startDemoBackend({ port: 0, failAfterCommit: 1, failMode: "drop" });
    await expect(send(`${backend.url}/invoices`, invoice("D"))).rejects.toThrow();
    expect(backend.stats().executions).toBe(1);
  });

  it("--stall-rate commits only after --stall", async () => {
    backend = await startDemoBackend({ port: 0, stallRate: 1, stallMs: 2_000 });
    const pending = send(`${backend.url}/invoices`, invoice("S"));
    const during = await send(`${backend.url}/invoices?number=S`, { method: "GET" });
    expect(during.status).toBe(404);
    expect((await pending).status).toBe(201);
    expect((await send(`${backend.url}/invoices?number=S`, { method: "GET" })).status).toBe(200);
  });
});
