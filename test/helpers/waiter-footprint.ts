/**
 * What one request waiting on a concurrent duplicate holds on the gateway's heap: a real gateway
 * (memory store) in this process, whose upstream holds the first attempt until told. Run with
 * --expose-gc as a forked child: the parent sends the duplicates over HTTP, so that the client's
 * own objects are not on this heap. Messages: {url} once listening; "measure" -> {heapUsed, waiting};
 * {waiting: n} -> "waiting" once n requests wait; "release" answers the held attempt.
 */
import { startTestGateway } from "./gateway.js";
import { startUpstream } from "./upstream.js";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc || !process.send) throw new Error("fork with --expose-gc");
const send = (m: unknown) => process.send?.(m);
let release: (() => void) | undefined;
const upstream = await startUpstream((call, res) => {
  if (call.url === "/warm") return void res.end("{}");
  release = () => {
    res.writeHead(201, { "content-type": "application/json" });
    res.end(JSON.stringify({ id: "inv-1" }));
  };
});
const gateway = await startTestGateway({
  upstream: upstream.url,
  log: { access: false },
  routes: [{ name: "invoices", match: { method: "POST", path: "/invoices" }, waitTimeout: "60s" }],
});
process.on("message", (m) => {
  if (typeof m === "object" && m !== null && "waiting" in m) {
    const poll = setInterval(() => {
      if (gateway.engine.waitingDuplicates < (m as { waiting: number }).waiting) return;
      clearInterval(poll);
      send("waiting");
    }, 20);
  } else if (m === "measure") {
    gc();
    gc();
    send({ heapUsed: process.memoryUsage().heapUsed, waiting: gateway.engine.waitingDuplicates });
  } else if (m === "release") release?.();
  else if (m === "exit") void Promise.all([gateway.close(), upstream.close()]).then(() => process.exit(0));
});
// A parent that dies (a test runner killed) takes this process with it.
process.on("disconnect", () => process.exit(0));
send({ url: gateway.url });
