import { pino } from "pino";
import { type Config, parseConfig } from "../../src/config/index.js";
import { type RunningGateway, startGateway } from "../../src/gateway/index.js";
import type { IdempotencyStore } from "../../src/store/index.js";

export type TestConfig = Omit<Record<string, unknown>, "upstream"> & {
  upstream: string | Record<string, unknown>;
};

export function testConfig(input: TestConfig): Config {
  const upstream = typeof input.upstream === "string" ? { url: input.upstream } : input.upstream;
  return parseConfig({ listen: { host: "127.0.0.1", port: 0 }, admin: { port: 0 }, ...input, upstream });
}

/** A gateway on a free port with a silent logger; closed by the caller (usually in afterEach). */
export function startTestGateway(input: TestConfig, store?: IdempotencyStore): Promise<RunningGateway> {
  return startGateway(testConfig(input), { logger: pino({ level: "silent" }), ...(store ? { store } : {}) });
}
