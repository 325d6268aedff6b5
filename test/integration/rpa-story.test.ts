/**
 * The story the gateway exists for, run against the shipped config/examples/rpa-callback.yaml and
 * its sample callback: a robot calls back a legacy invoice API, gives up after 30 s while the backend
 * is still booking (it commits at 31 s), and retries at once; another robot mints a new
 * Idempotency-Key for every attempt. The 30 s and 31 s are the order of events, not wall-clock time:
 * the robot "times out" by aborting once the backend holds its request, and the backend "commits
 * at 31 s" when the test opens its gate after the retry is waiting.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { describe, expect, it, vi } from "vitest";
import { loadConfig } from "../../src/config/index.js";
import { startDemoBackend } from "../../src/demo/index.js";
import { type RunningGateway, startGateway } from "../../src/gateway/index.js";
import { type Reply, send } from "../helpers/http.js";
import { closeAfterEach } from "../helpers/teardown.js";
import { gate, startUpstream } from "../helpers/upstream.js";

const EXAMPLE = fileURLToPath(new URL("../../config/examples/rpa-callback.yaml", import.meta.url));
const SAMPLE = fileURLToPath(new URL("../../config/examples/samples/rpa-callback.json", import.meta.url));
const sample = JSON.parse(await readFile(SAMPLE, "utf8")) as Record<string, string>;

const use = closeAfterEach();

async function exampleGateway(upstreamUrl: string): Promise<RunningGateway> {
  const config = await loadConfig(EXAMPLE, { upstream: upstreamUrl, port: 0, adminPort: 0 });
  return startGateway(config, { logger: pino({ level: "silent" }) });
}

/** One robot's callback for an invoice: the sample with its own invoice number, a new sentAt per attempt. */
function callback(
  gateway: RunningGateway,
  robot: string,
  invoiceNumber: string,
  attempt: number,
  mintedKey = false,
) {
  return {
    url: `${gateway.url}/callbacks/${robot}`,
    init: {
      headers: {
        authorization: `Bearer ${robot}`,
        "content-type": "application/json",
        ...(mintedKey ? { "idempotency-key": `${robot}-attempt-${attempt}` } : {}),
      },
      body: JSON.stringify({ ...sample, invoiceNumber, sentAt: `2026-11-30T09:15:0${attempt}Z` }),
    },
  };
}

describe("the RPA callback story, on the shipped example", () => {
  it("a commit after the robot's timeout, retried at once, by a plain robot and by one that mints keys: one execution each, both end with the booked answer", async () => {
    const booked = new Map<string, number>();
    const commit = gate();
    const upstream = use(
      await startUpstream(async (call, res) => {
        const body = JSON.parse(call.body.toString()) as Record<string, string>;
        const key = `${body.invoiceNumber}/${body.transactionID}`;
        await commit.promise; // the backend takes 31 s
        booked.set(key, (booked.get(key) ?? 0) + 1);
        res.writeHead(201, { "content-type": "application/json" });
        res.end(
          JSON.stringify({ id: `INV-${booked.size}`, invoiceNumber: body.invoiceNumber, status: "booked" }),
        );
      }),
    );
    const gateway = use(await exampleGateway(upstream.url));

    const robots = [
      { robot: "robot-7", invoice: "INV-2026-4711", minted: false },
      { robot: "robot-8", invoice: "INV-2026-4712", minted: true },
    ];
    const firstAttempts = robots.map(({ robot, invoice, minted }) => {
      const timeout = new AbortController();
      const { url, init } = callback(gateway, robot, invoice, 1, minted);
      return { timeout, sent: send(url, { ...init, signal: timeout.signal }).catch((err: Error) => err) };
    });
    await upstream.called(2);
    // 30 s: both robots give up and retry at once.
    for (const a of firstAttempts) a.timeout.abort();
    for (const a of firstAttempts) expect(await a.sent).toBeInstanceOf(Error);
    const retries = robots.map(({ robot, invoice, minted }) => {
      const { url, init } = callback(gateway, robot, invoice, 2, minted);
      return send(url, init);
    });
    await vi.waitFor(() => expect(gateway.engine.waitingDuplicates).toBe(2));
    // 31 s: the backend commits both callbacks.
    commit.open();
    const answers: Reply[] = await Promise.all(retries);
    for (const [i, answer] of answers.entries()) {
      expect(answer.status).toBe(201);
      expect(answer.headers["idempotent-replayed"]).toBe("true");
      expect(answer.json()).toMatchObject({ invoiceNumber: robots[i]?.invoice, status: "booked" });
    }
    expect([...booked.values()]).toEqual([1, 1]);
    expect(upstream.calls).toHaveLength(2);
    // Every later retry, minted key or not, gets the same bytes.
    const third = callback(gateway, "robot-8", "INV-2026-4712", 3, true);
    const late = await send(third.url, third.init);
    expect(late.body.equals(answers[1]?.body ?? Buffer.alloc(0))).toBe(true);
  });

  it("a commit followed by a 500: the retry gets the booked invoice as a 201, in a first answer's shape", async () => {
    const backend = use(await startDemoBackend({ port: 0, failAfterCommit: 1, failMode: "500" }));
    const gateway = use(await exampleGateway(backend.url));
    const first = callback(gateway, "robot-7", "INV-2026-4713", 1);
    const failed = await send(first.url, first.init);
    expect(failed.status).toBe(500);
    const retry = callback(gateway, "robot-7", "INV-2026-4713", 2, true);
    const answer = await send(retry.url, retry.init);
    expect(answer.status).toBe(201);
    expect(answer.headers["idempotent-replayed"]).toBe("reconciled");
    expect(answer.json()).toMatchObject({
      id: "INV-000001",
      invoiceNumber: "INV-2026-4713",
      transactionId: sample.transactionID,
      amount: sample.amount,
    });
    expect(backend.stats().executions).toBe(1);
  });

  it("a callback without its amount is refused in the backend's error shape, naming the field, nothing forwarded", async () => {
    const backend = use(await startDemoBackend({ port: 0 }));
    const gateway = use(await exampleGateway(backend.url));
    const { amount: _, ...withoutAmount } = sample;
    const answer = await send(`${gateway.url}/callbacks/robot-7`, {
      headers: {
        authorization: "Bearer robot-7",
        "content-type": "application/json",
        "x-request-id": "job-311",
      },
      body: JSON.stringify(withoutAmount),
    });
    expect(answer.status).toBe(400);
    expect(answer.headers["content-type"]).toBe("application/json");
    expect(answer.json()).toEqual({
      error: "body:/amount is required",
      code: "MISSING_FIELD",
      retryable: false,
      requestId: "job-311",
    });
    expect(backend.stats().executions).toBe(0);
  });
});
