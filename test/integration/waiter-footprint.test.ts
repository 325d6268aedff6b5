/**
 * Ten thousand duplicates of one slow request wait on one gateway: what each holds while it waits
 * decides whether they fit. Measured on the gateway's heap, in a child process with --expose-gc.
 */
import { type ChildProcess, fork } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { Agent, request } from "undici";
import { afterEach, describe, expect, it } from "vitest";

const HELPER = fileURLToPath(new URL("../helpers/waiter-footprint.ts", import.meta.url));
const N = 2_000;

interface Measure {
  heapUsed: number;
  waiting: number;
}

let child: ChildProcess | undefined;
afterEach(() => {
  child?.kill();
  child = undefined;
});

function next<T>(proc: ChildProcess): Promise<T> {
  return once(proc, "message").then(([m]) => m as T);
}

describe("a request waiting on a duplicate", () => {
  it("holds its connection's objects and little more: no framework context, no AbortController, few async frames", async () => {
    const proc = fork(HELPER, { execArgv: ["--expose-gc", "--import", "tsx"], stdio: "ignore" });
    child = proc;
    const { url } = await next<{ url: string }>(proc);
    const agent = new Agent({ connections: N + 10 });
    const post = (key: string) =>
      request(`${url}/invoices`, {
        dispatcher: agent,
        method: "POST",
        headers: { "content-type": "application/json", "idempotency-key": key },
        body: JSON.stringify({ invoiceNumber: "INV-1", amount: 100 }),
      });
    // Everything a first request loads and compiles, out of the measurement.
    const warm = await request(`${url}/warm`, { dispatcher: agent });
    await warm.body.text();
    proc.send("measure");
    const before = await next<Measure>(proc);

    const answers = Array.from({ length: N }, () =>
      post("dup-1").then(async (r) => [r.statusCode, await r.body.text()]),
    );
    proc.send({ waiting: N - 1 });
    await next(proc);
    proc.send("measure");
    const now = await next<Measure>(proc);
    expect(now.waiting).toBe(N - 1);
    const perWaiter = (now.heapUsed - before.heapUsed) / N;
    proc.send("release");
    const all = await Promise.all(answers);
    await agent.close();
    proc.send("exit");

    expect(new Set(all.map(([status, body]) => `${status} ${body}`))).toEqual(
      new Set(['201 {"id":"inv-1"}']),
    );
    // About 13.7 KB each while the framework's handler stayed suspended with its context, with an
    // AbortController and six async frames per waiter; a bare node:http request is about 6.7 KB.
    expect(perWaiter).toBeLessThan(10_000);
  }, 120_000);
});
