// `npm run demo`: the demo invoice backend on :9000 and the gateway (embedded store; Redis with
// STORE=redis; PostgreSQL with STORE=postgres, at STORE_POSTGRES_URL) on :8080 in front of it.
// Prints what to try; Ctrl-C stops both.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const cli = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
const config = fileURLToPath(new URL("../config/gateway.yaml", import.meta.url));
const children = [];

function start(name, args) {
  const child = spawn(process.execPath, [cli, ...args], { stdio: ["ignore", "pipe", "inherit"] });
  children.push(child);
  child.on("exit", (code, signal) => {
    if (!stopping) {
      console.error(`${name} exited (${code ?? signal}); stopping the demo`);
      stop(1);
    }
  });
  return new Promise((resolve) => {
    child.stdout.on("data", (chunk) => {
      const text = chunk.toString();
      process.stdout.write(`[${name}] ${text}`);
      if (/listening on/.test(text)) resolve();
    });
  });
}

let stopping = false;
function stop(code = 0) {
  stopping = true;
  for (const child of children) child.kill("SIGTERM");
  Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r() : c.on("exit", r))))).then(
    () => process.exit(code),
  );
}
process.on("SIGINT", () => stop(0));
process.on("SIGTERM", () => stop(0));

await start("backend", ["demo-backend", "--port", "9000", "--latency", "50ms"]);
await start("gateway", ["serve", "--config", config]);

const body = `'{"invoiceNumber":"INV-4711","transactionId":"T-1","amount":120.5}'`;
console.log(`
Try it (in another terminal):

  # create an invoice through the gateway; run it twice: the second answer is a replay
  curl -si -X POST localhost:8080/invoices -H 'X-Tenant-Id: acme' -H 'Content-Type: application/json' -d ${body}

  # the same request straight to the backend creates a duplicate every time
  curl -s -X POST localhost:9000/invoices -H 'Content-Type: application/json' -d ${body}

  # what the backend executed
  curl -s localhost:9000/stats

Ctrl-C stops both.`);
