/**
 * Real retrying clients in front of a backend that commits and then fails (a 500, or a dropped
 * connection): the Stripe Node SDK, undici's RetryAgent, got and axios-retry, each with its own
 * retry policy and its own idea of what an error is. Through the gateway no operation is executed
 * twice; with reconcile every client ends with the committed invoice; without it every client sees
 * an error it recognises as one, never a success it did not get.
 */
import axios from "axios";
import axiosRetry from "axios-retry";
import got from "got";
import Stripe from "stripe";
import { Agent, RetryAgent, request } from "undici";
import { describe, expect, it } from "vitest";
import { type RunningDemoBackend, startDemoBackend } from "../../src/demo/index.js";
import { startTestGateway } from "../helpers/gateway.js";
import { closeAfterEach } from "../helpers/teardown.js";

const use = closeAfterEach();

/** What a client's caller ends up holding: the invoice it was given, or the error it was given. */
type Outcome = { ok: true; id: string } | { ok: false; error: string };

interface Operation {
  invoiceNumber: string;
  transactionId: string;
  amount: number;
  /** One key per operation, kept across the client's own retries. */
  key: string;
}

type Client = (gatewayUrl: string, op: Operation) => Promise<Outcome>;

const failed = (err: unknown): Outcome => ({
  ok: false,
  error: err instanceof Error ? err.message : String(err),
});
const fields = (op: Operation) => ({
  invoiceNumber: op.invoiceNumber,
  transactionId: op.transactionId,
  amount: op.amount,
});

const clients: Record<string, { send: Client; readsErrorMember?: boolean }> = {
  // Tells an error by an `error` member in the body; retries 409 and 5xx and connection errors.
  "Stripe Node SDK": {
    readsErrorMember: true,
    async send(gatewayUrl, op) {
      const url = new URL(gatewayUrl);
      const stripe = new Stripe("sk_test_interop", {
        host: url.hostname,
        port: Number(url.port),
        protocol: "http",
        maxNetworkRetries: 2,
      });
      try {
        const res = await stripe.rawRequest("POST", "/callbacks/stripe", fields(op), {
          idempotencyKey: op.key,
        });
        const id = (res as { id?: unknown }).id;
        return typeof id === "string"
          ? { ok: true, id }
          : failed(`a success without an id: ${JSON.stringify(res)}`);
      } catch (err) {
        return failed(err);
      }
    },
  },
  "undici RetryAgent": {
    async send(gatewayUrl, op) {
      const agent = use(new Agent());
      const dispatcher = new RetryAgent(agent, {
        maxRetries: 3,
        minTimeout: 20,
        maxTimeout: 100,
        methods: ["POST"],
        statusCodes: [500, 502, 503, 504],
      });
      try {
        const res = await request(`${gatewayUrl}/invoices`, {
          method: "POST",
          dispatcher,
          headers: {
            "content-type": "application/json",
            "idempotency-key": op.key,
            authorization: "Bearer u",
          },
          body: JSON.stringify(fields(op)),
        });
        const body = (await res.body.json()) as { id?: string };
        if (res.statusCode >= 400) return failed(`status ${res.statusCode}`);
        return body.id ? { ok: true, id: body.id } : failed("a success without an id");
      } catch (err) {
        return failed(err);
      }
    },
  },
  got: {
    async send(gatewayUrl, op) {
      try {
        const body = await got
          .post(`${gatewayUrl}/invoices`, {
            json: fields(op),
            headers: { "idempotency-key": op.key, authorization: "Bearer g" },
            retry: {
              limit: 3,
              methods: ["POST"],
              statusCodes: [500, 502, 503, 504],
              calculateDelay: ({ computedValue }) => (computedValue ? 20 : 0),
            },
          })
          .json<{ id?: string }>();
        return body.id ? { ok: true, id: body.id } : failed("a success without an id");
      } catch (err) {
        return failed(err);
      }
    },
  },
  "axios-retry": {
    async send(gatewayUrl, op) {
      const client = axios.create({ baseURL: gatewayUrl });
      axiosRetry(client, {
        retries: 3,
        retryDelay: () => 20,
        // What a robot's stack does: retry a POST on a network error or a 5xx.
        retryCondition: (err) => axiosRetry.isNetworkError(err) || (err.response?.status ?? 0) >= 500,
      });
      try {
        const res = await client.post("/invoices", fields(op), {
          headers: { "idempotency-key": op.key, authorization: "Bearer a" },
        });
        const id = (res.data as { id?: string }).id;
        return id ? { ok: true, id } : failed("a success without an id");
      } catch (err) {
        return failed(err);
      }
    },
  },
};

/** The one documented line for clients that tell an error by an `error` member (Stripe's SDKs). */
const ERROR_MEMBER = {
  template: { error: { type: "api_error", code: "{code}", message: "{detail}", retryable: "{retryable}" } },
};

const probeBy = (source: "body:/" | "form:") => ({
  probe: { path: `/invoices?number={${source}invoiceNumber}&transactionId={${source}transactionId}` },
  found: [200],
  notFound: [404],
  replay: { status: 201, body: "/0" },
});

/** The shipped defaults; with reconcile, routes that ask the demo backend what it booked. */
function gatewayConfig(backend: RunningDemoBackend, reconcile: boolean, errorMember: boolean) {
  return {
    upstream: backend.url,
    ...(errorMember ? { defaults: { errorBody: ERROR_MEMBER } } : {}),
    routes: reconcile
      ? [
          {
            name: "invoices",
            match: { method: "POST", path: "/invoices" },
            onUnknown: "reconcile",
            reconcile: probeBy("body:/"),
          },
          {
            name: "stripe-callbacks",
            match: { method: "POST", path: "/callbacks/:robot" },
            onUnknown: "reconcile",
            reconcile: probeBy("form:"),
          },
        ]
      : [],
  };
}

/** The id the backend booked for an invoice number (it booked each exactly once, or the test fails). */
async function committedId(backend: RunningDemoBackend, invoiceNumber: string): Promise<string> {
  const res = await request(`${backend.url}/invoices?number=${invoiceNumber}`);
  const list = (await res.body.json()) as { id: string }[];
  expect(list).toHaveLength(1);
  return (list[0] as { id: string }).id;
}

const OPERATIONS = 3;

describe("retrying clients against a backend that commits, then fails", () => {
  for (const failMode of ["500", "drop"] as const) {
    for (const [name, client] of Object.entries(clients)) {
      for (const reconcile of [false, true]) {
        const title = `${name}, ${failMode === "500" ? "500 after commit" : "dropped connection after commit"}, ${
          reconcile ? "reconcile" : "shipped defaults"
        }`;
        it(title, async () => {
          const backend = use(await startDemoBackend({ port: 0, failAfterCommit: 1, failMode }));
          const gateway = use(
            await startTestGateway(gatewayConfig(backend, reconcile, client.readsErrorMember === true)),
          );
          const ops: Operation[] = Array.from({ length: OPERATIONS }, (_, i) => ({
            invoiceNumber: `INV-${name.replace(/\W/g, "")}-${failMode}-${reconcile}-${i}`,
            transactionId: `T-${i}`,
            amount: 100 + i,
            key: `op-${name.replace(/\W/g, "")}-${failMode}-${reconcile}-${i}`,
          }));
          const outcomes = await Promise.all(ops.map((op) => client.send(gateway.url, op)));
          expect(backend.stats()).toMatchObject({ executions: OPERATIONS, duplicates: 0 });
          for (const [i, outcome] of outcomes.entries()) {
            const op = ops[i] as Operation;
            if (reconcile)
              expect(outcome).toEqual({ ok: true, id: await committedId(backend, op.invoiceNumber) });
            else expect(outcome.ok, JSON.stringify(outcome)).toBe(false);
          }
        });
      }
    }
  }
});
