import { afterAll, beforeAll } from "vitest";
import { describeThreeGatewayStorm } from "../helpers/gateway-storm.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.close();
});

describeThreeGatewayStorm(
  "one Redis",
  () => `{ kind: redis, redis: { url: "${redis.url}", prefix: "multi:" } }`,
  {
    keys: 300,
    copies: 10,
    keysAtOnce: 50,
  },
);
