import fc from "fast-check";
import { type LoggerOptions, pino } from "pino";
import { describe, expect, it } from "vitest";
import { accessFields, accessLog } from "../../../src/gateway/access-log.js";
import { type RequestEvent, RequestOutcome } from "../../../src/gateway/observe.js";

/** A pino logger at a fixed time whose lines are kept. */
function capture(options: LoggerOptions = {}) {
  const lines: string[] = [];
  const logger = pino(
    { level: "info", timestamp: () => ',"time":1700000000000', ...options },
    { write: (line: string) => lines.push(line) },
  );
  return { logger, lines };
}

const event = fc.record({
  time: fc.constant(0),
  requestId: fc.stringMatching(/^[\x21-\x7e]{1,60}$/),
  route: fc.string({ unit: "grapheme", maxLength: 40 }),
  method: fc.constantFrom("POST", "PUT", "PATCH", "DELETE"),
  path: fc.string({
    unit: fc.integer({ min: 0x20, max: 0xff }).map((c) => String.fromCharCode(c)),
    maxLength: 120,
  }),
  storeKey: fc.option(fc.stringMatching(/^[A-Za-z0-9_-]{43}$/), { nil: undefined }),
  outcome: fc.constantFrom(...Object.values(RequestOutcome)),
  status: fc.integer({ min: 100, max: 599 }),
  upstreamMs: fc.option(fc.double({ min: 0, max: 1e6, noNaN: true }), { nil: undefined }),
  totalMs: fc.double({ min: 0, max: 1e6, noNaN: true }),
}) as fc.Arbitrary<RequestEvent>;

describe("accessLog", () => {
  it("writes, byte for byte, the line logger.info would have written", () => {
    fc.assert(
      fc.property(event, (ev) => {
        const direct = capture();
        const viaPino = capture();
        accessLog(direct.logger)(ev);
        viaPino.logger.info(accessFields(ev), "protected request");
        expect(direct.lines).toEqual(viaPino.lines);
        expect(JSON.parse(direct.lines[0] as string)).toMatchObject({
          requestId: ev.requestId,
          route: ev.route,
        });
      }),
      { numRuns: 500 },
    );
  });

  it("keeps a child logger's bindings", () => {
    const { logger, lines } = capture();
    const ev: RequestEvent = {
      time: 0,
      requestId: "r-1",
      route: "create-invoice",
      method: "POST",
      path: "/invoices",
      outcome: RequestOutcome.Executed,
      status: 201,
      totalMs: 3.24159,
    };
    accessLog(logger.child({ worker: 2 }))(ev);
    expect(JSON.parse(lines[0] as string)).toMatchObject({ worker: 2, requestId: "r-1", totalMs: 3.2 });
  });

  it("leaves a logger it does not match to pino: a mixin still adds its fields", () => {
    const { logger, lines } = capture({ mixin: () => ({ tenant: "t-9" }) });
    accessLog(logger)({
      time: 0,
      requestId: "r-2",
      route: "r",
      method: "POST",
      path: "/x",
      outcome: RequestOutcome.Replayed,
      status: 200,
      totalMs: 1,
    });
    expect(JSON.parse(lines[0] as string)).toMatchObject({
      tenant: "t-9",
      requestId: "r-2",
      outcome: "replayed",
    });
  });

  it("writes nothing below the logger's level, including after the level changed", () => {
    const { logger, lines } = capture();
    const write = accessLog(logger);
    logger.level = "warn";
    write({
      time: 0,
      requestId: "r-3",
      route: "r",
      method: "POST",
      path: "/x",
      outcome: RequestOutcome.Executed,
      status: 201,
      totalMs: 1,
    });
    expect(lines).toEqual([]);
  });
});
