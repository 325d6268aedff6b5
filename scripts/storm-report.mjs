// `npm run storm-report`: makes the README's storm report screenshot (docs/storm-report.png) from a
// real storm: the demo backend (20 ms), the gateway on the embedded store in front of it, and
// `storm --html` against both. Needs a build (npm run build) and Chromium (CHROMIUM_PATH, by
// default Debian's /usr/bin/chromium). Everything listens on 127.0.0.1 and stops when done.
import { execFile, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

const cli = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
const out = fileURLToPath(new URL("../docs/storm-report.png", import.meta.url));
const dir = await mkdtemp(join(tmpdir(), "storm-report-"));
const children = [];

function start(args) {
  const child = spawn(process.execPath, [cli, ...args], { stdio: ["ignore", "pipe", "inherit"] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let text = "";
    child.stdout.on("data", (chunk) => {
      text += chunk;
      const m = /listening on (\S+)/.exec(text);
      if (m) resolve(m[1]);
    });
    child.on("exit", (code) => reject(new Error(`${args[0]} exited ${code}`)));
  });
}

try {
  const backend = await start(["demo-backend", "--port", "0", "--latency", "20ms"]);
  const config = join(dir, "gateway.yaml");
  await writeFile(config, `upstream: { url: "${backend}" }\nadmin: { port: false }\nlog: { level: warn }\n`);
  const gateway = await start(["serve", "--config", config, "--port", "0"]);
  const html = join(dir, "report.html");
  const args = ["--keys", "500", "--retries", "19", "--concurrency", "200", "--key-header"];
  // Run in the temporary directory, so that the command line on the page names no path of this machine.
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [
      cli,
      "storm",
      "--target",
      `${gateway}/invoices`,
      "--compare",
      `${backend}/invoices`,
      ...args,
      "--stats-url",
      `${backend}/stats`,
      "--html",
      "report.html",
    ],
    { cwd: dir },
  );
  process.stdout.write(stdout);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    args: ["--no-sandbox"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(pathToFileURL(html).href);
  await page.waitForSelector("body[data-ready='1']");
  await page.screenshot({ path: out, fullPage: true });
  await browser.close();
  console.log(`screenshot written to ${out}`);
} finally {
  for (const child of children) child.kill("SIGTERM");
  await rm(dir, { recursive: true, force: true });
}
