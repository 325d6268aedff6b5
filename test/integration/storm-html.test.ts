/**
 * `storm --html`: a report made from a real storm (gateway vs the demo backend), opened from disk in
 * headless Chromium. The numbers on the page are the run's, and every chart drew its series.
 */
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import type { Page } from "playwright-core";
import { describe, expect, it } from "vitest";
import { startDemoBackend } from "../../src/demo/index.js";
import { stormHtml } from "../../src/storm/html.js";
import { DEFAULT_BODY, Pattern, runStorm, type StormReport } from "../../src/storm/index.js";
import { launchChromium } from "../helpers/browser.js";
import { startTestGateway } from "../helpers/gateway.js";
import { runCli } from "../helpers/process.js";
import { closeAfterEach } from "../helpers/teardown.js";

const use = closeAfterEach();

interface Canvas2D {
  width: number;
  height: number;
  getContext(kind: "2d"): {
    getImageData(x: number, y: number, w: number, h: number): { data: ArrayLike<number> };
  };
}

/** Pixels of a canvas within `tolerance` of a series colour: what a series drew, not axes or grid. */
function pixelsOf(page: Page, selector: string, rgb: readonly [number, number, number]): Promise<number> {
  return page.$eval(
    selector,
    (el, [r, g, b]) => {
      // The suite compiles without the DOM library: the canvas is described by what is used of it.
      const canvas = el.querySelector("canvas") as unknown as Canvas2D;
      const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      let n = 0;
      for (let i = 0; i < data.length; i += 4) {
        const near = (x: number, y: number) => Math.abs(x - y) <= 12;
        if (near(data[i] as number, r) && near(data[i + 1] as number, g) && near(data[i + 2] as number, b))
          n++;
      }
      return n;
    },
    rgb,
  );
}

describe("storm --html", () => {
  it("writes one page that opens from disk and shows the run: headline, latency, timeline, operations", async () => {
    const dir = await mkdtemp(join(tmpdir(), "storm-html-"));
    use({ close: () => rm(dir, { recursive: true, force: true }) });
    const backend = use(await startDemoBackend({ port: 0, latencyMs: [20, 20] }));
    const gateway = use(await startTestGateway({ upstream: backend.url }));
    const html = join(dir, "report.html");
    const json = join(dir, "report.json");
    const r = await runCli([
      "storm",
      "--target",
      `${gateway.url}/invoices`,
      "--compare",
      `${backend.url}/invoices`,
      "--keys",
      "40",
      "--retries",
      "4",
      "--key-header",
      "--stats-url",
      `${backend.url}/stats`,
      "--html",
      html,
      "--json",
      json,
    ]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const [target, compare] = JSON.parse(await readFile(json, "utf8")) as StormReport[];
    // The JSON stays the summary; the page carries the detail.
    expect(target).not.toHaveProperty("detail");
    expect(target?.backend?.duplicates).toBe(0);
    expect(compare?.backend?.duplicates).toBe(160);

    const page = await (async () => {
      const browser = await launchChromium();
      use({ close: () => browser.close() });
      const p = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      // Nothing may be fetched: the page is self-contained.
      await p.route("**/*", (route) =>
        route.request().url().startsWith("file:") ? route.continue() : route.abort(),
      );
      return p;
    })();
    const problems: string[] = [];
    page.on("pageerror", (e) => problems.push(e.message));
    page.on("requestfailed", (req) => problems.push(`fetched ${req.url()}`));
    await page.goto(pathToFileURL(html).href);
    await page.waitForSelector("body[data-ready='1']", { timeout: 10_000 });
    expect(problems).toEqual([]);

    const figure = (run: string, name: string) =>
      page.textContent(`.run[data-run='${run}'] [data-figure='${name}'] .n`);
    expect(await figure("target", "duplicates created")).toBe("0");
    expect(await figure("compare", "duplicates created")).toBe("160");
    expect(await figure("target", "backend executions")).toBe("40");
    expect(await figure("compare", "copies sent")).toBe("200");
    expect(await page.textContent("tr[data-run='target'] [data-figure='p99']")).toBe(
      target?.latencyMs.p99.toLocaleString("en-US"),
    );
    expect(await page.textContent(".command")).toContain("storm --target");

    // Each chart drew its series (in the series' own colours) from the run's points.
    expect(Number(await page.getAttribute("#latency", "data-rendered"))).toBeGreaterThan(10);
    expect(await pixelsOf(page, "#latency", [46, 134, 193])).toBeGreaterThan(100); // target
    expect(await pixelsOf(page, "#latency", [230, 126, 34])).toBeGreaterThan(100); // compare
    for (const run of ["target", "compare"]) {
      const timeline = `[data-chart='timeline'][data-run='${run}']`;
      expect(Number(await page.getAttribute(timeline, "data-rendered"))).toBeGreaterThan(0);
      expect(await pixelsOf(page, timeline, [39, 174, 96])).toBeGreaterThan(100); // 2xx
      expect(await page.getAttribute(`[data-chart='sends'][data-run='${run}']`, "data-rendered")).toBe("1");
    }
    expect(await page.textContent(".run[data-run='compare'] [data-figure='operations-by']")).toContain(
      "40 with differing ones",
    );
    expect(await page.locator(".run[data-run='compare'] table[data-table='worst'] tr").count()).toBe(11);

    const shot = join(dir, "report.png");
    await page.screenshot({ path: shot, fullPage: true });
    expect((await stat(shot)).size).toBeGreaterThan(20_000);
  }, 60_000);

  it("draws a run that fits in one slice of the timeline as a band over that slice", async () => {
    const backend = use(await startDemoBackend({ port: 0 }));
    const report = await runStorm({
      target: `${backend.url}/invoices`,
      method: "POST",
      keys: 5,
      retries: 1,
      pattern: Pattern.Burst,
      concurrency: 10,
      connections: 10,
      timeoutMs: 10_000,
      backoffMs: 0,
      maxDurationMs: 10_000,
      body: DEFAULT_BODY,
      headers: { "content-type": "application/json" },
      keyHeader: true,
      detail: true,
    });
    const detail = report.detail;
    if (!detail) throw new Error("the storm kept no detail");
    // A short run on a fast machine: every answer came in the first slice.
    const answers = report.statuses["201"] ?? 0;
    expect(answers).toBe(10);
    detail.timeline = [
      { at: 0, "2xx": (answers * 1000) / detail.sliceMs, "3xx": 0, "4xx": 0, "5xx": 0, none: 0 },
    ];
    const dir = await mkdtemp(join(tmpdir(), "storm-html-"));
    use({ close: () => rm(dir, { recursive: true, force: true }) });
    const html = join(dir, "one-slice.html");
    await writeFile(
      html,
      await stormHtml([{ label: "target", report }], {
        command: "storm",
        version: "test",
        at: new Date(0).toISOString(),
      }),
    );
    const browser = await launchChromium();
    use({ close: () => browser.close() });
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(pathToFileURL(html).href);
    await page.waitForSelector("body[data-ready='1']", { timeout: 10_000 });
    expect(await pixelsOf(page, "[data-chart='timeline'][data-run='target']", [39, 174, 96])).toBeGreaterThan(
      100,
    );
  }, 60_000);
});
