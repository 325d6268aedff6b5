/**
 * Two cluster workers: the first listens on port 0 as a gateway does (the port shared through the
 * primary) and counts the requests it gets; the second then warms undici's parser. Prints one JSON
 * line: how many requests of the warm-up reached the first worker's server.
 */
import cluster from "node:cluster";
import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { warmHttpParser } from "../../src/proxy/warm-parser.js";

if (cluster.isPrimary) {
  const server = cluster.fork({ ROLE: "server" });
  await once(server, "message");
  const warm = cluster.fork({ ROLE: "warm" });
  await once(warm, "message");
  server.send("count");
  const [{ count }] = (await once(server, "message")) as [{ count: number }];
  process.stdout.write(`${JSON.stringify({ reached: count })}\n`);
  server.kill();
  warm.kill();
} else if (process.env.ROLE === "server") {
  let count = 0;
  const s = createServer((_req, res) => {
    count++;
    res.end();
  });
  s.listen(0, "127.0.0.1", () => process.send?.({ port: (s.address() as AddressInfo).port }));
  process.on("message", () => process.send?.({ count }));
} else {
  await warmHttpParser();
  process.send?.({ warmed: true });
}
