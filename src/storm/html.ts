import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import type { StormReport } from "./types.js";

/** Who made a report and how, so that it can be made again. */
export interface ReportOrigin {
  /** The command line, as a shell would take it. */
  command: string;
  version: string;
  /** When the storm ran (ISO). */
  at: string;
}

export interface LabelledReport {
  label: string;
  report: StormReport;
}

/**
 * One HTML file that opens from disk with no network: uPlot (canvas charts, about 50 KB, no
 * dependencies) and its stylesheet are inlined, and so is the data. Only `storm --html` loads this
 * module, and only it reads uPlot.
 */
export async function stormHtml(runs: readonly LabelledReport[], origin: ReportOrigin): Promise<string> {
  const require = createRequire(import.meta.url);
  const dist = (file: string) => require.resolve(`uplot/dist/${file}`);
  const [uplotJs, uplotCss] = await Promise.all([
    readFile(dist("uPlot.iife.min.js"), "utf8"),
    readFile(dist("uPlot.min.css"), "utf8"),
  ]);
  const data = { origin, runs: runs.map(({ label, report }) => ({ label, report })) };
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Retry storm report: ${escapeHtml(runs.map((r) => r.report.target).join(" vs "))}</title>
<style>${uplotCss}</style>
<style>${STYLE}</style>
</head>
<body>
<h1>Retry storm report</h1>
<p class="origin">${escapeHtml(origin.at)} &middot; idempotency-gateway ${escapeHtml(origin.version)}</p>
<pre class="command">${escapeHtml(origin.command)}</pre>
<section id="headline"></section>
<h2>Latency</h2>
<div class="row"><div class="chart" id="latency" data-chart="latency"></div><table id="latency-table"></table></div>
<h2>Over time</h2>
<div id="timelines" class="row"></div>
<h2>Per operation</h2>
<div id="operations" class="row"></div>
<script>${scriptSafe(uplotJs)}</script>
<script type="application/json" id="storm-data">${scriptSafe(JSON.stringify(data))}</script>
<script>${GLUE}</script>
</body>
</html>
`;
}

function escapeHtml(text: string): string {
  return text.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] as string,
  );
}

/** Text inside a script element must not close it. */
function scriptSafe(text: string): string {
  return text.replace(/<\/(script)/gi, "<\\/$1").replace(/<!--/g, "<\\!--");
}

const STYLE = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #1d2733; padding: 0 16px; }
h1 { margin-bottom: 0; } h2 { margin-top: 32px; border-bottom: 1px solid #d8dee6; }
.origin { color: #5b6b7c; margin-top: 4px; }
.command { background: #f3f5f8; padding: 8px 12px; white-space: pre-wrap; word-break: break-all; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.run { flex: 1 1 520px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; }
.card { border: 1px solid #d8dee6; border-radius: 6px; padding: 10px 14px; min-width: 130px; }
.card .n { font-size: 28px; font-weight: 600; } .card .l { color: #5b6b7c; }
.card.bad .n { color: #c0392b; } .card.good .n { color: #1e8449; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; border-bottom: 1px solid #e5e9ef; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.statuses { font-family: ui-monospace, monospace; text-align: left; }
`;

/** Glue only: the data into uPlot's shape, and the numbers into the page. */
const GLUE = `
const { origin, runs } = JSON.parse(document.getElementById("storm-data").textContent);
const COLORS = ["#2e86c1", "#e67e22"];
const CLASSES = [["2xx", "#27ae60"], ["3xx", "#8e44ad"], ["4xx", "#f39c12"], ["5xx", "#c0392b"], ["none", "#7f8c8d"]];
const el = (tag, attrs = {}, text) => { const e = document.createElement(tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); if (text !== undefined) e.textContent = text; return e; };
const fmt = (n) => typeof n === "number" ? n.toLocaleString("en-US") : String(n);

// Headline: what the backend executed, per run.
for (const [i, { label, report: r }] of runs.entries()) {
  const box = el("div", { class: "run", "data-run": label });
  box.append(el("h3", {}, label + ": " + r.target));
  const cards = el("div", { class: "cards" });
  const card = (name, value, cls) => { const c = el("div", { class: "card " + (cls ?? ""), "data-figure": name }); c.append(el("div", { class: "n" }, fmt(value)), el("div", { class: "l" }, name)); cards.append(c); };
  card("operations", r.operations);
  card("copies sent", r.sends);
  card("backend executions", r.backend ? r.backend.executions : "n/a");
  const dup = r.backend ? r.backend.duplicates : "n/a";
  card("duplicates created", dup, dup === 0 ? "good" : typeof dup === "number" ? "bad" : "");
  card("differing 2xx answers", r.consistency.inconsistent, r.consistency.inconsistent === 0 ? "good" : "bad");
  box.append(cards);
  document.getElementById("headline").append(box);
}

function chart(container, opts, data) {
  const width = Math.max(360, Math.min(container.parentElement.clientWidth - 24, runs.length > 1 && container.dataset.wide !== "1" ? 560 : 760));
  const plot = new uPlot({ width, height: 300, ...opts }, data, container);
  container.dataset.rendered = String(data[0].length);
  return plot;
}

// Latency: HDR percentile plot, x = 1 / (1 - p) on a log axis, so that the tail is as wide as the median.
{
  const xs = [...new Set(runs.flatMap(({ report }) => (report.detail?.percentiles ?? []).map(([p]) => p)))].sort((a, b) => a - b);
  const x = xs.map((p) => 1 / Math.max(1e-9, 1 - p / 100));
  const series = runs.map(({ report }) => { const m = new Map((report.detail?.percentiles ?? []).map(([p, v]) => [p, v])); return xs.map((p) => m.get(p) ?? null); });
  const box = document.getElementById("latency");
  box.dataset.wide = "1";
  const nines = (v) => +(100 * (1 - 1 / v)).toFixed(4) + "%";
  chart(box, {
    title: "Latency by percentile (ms, log)",
    scales: { x: { time: false, distr: 3 }, y: { distr: 3 } },
    axes: [{ splits: (u) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6].filter((v) => v <= u.scales.x.max * 1.0001), values: (u, vals) => vals.map(nines), label: "percentile" }, { label: "ms" }],
    series: [{ label: "percentile", value: (u, v) => v == null ? "-" : nines(v) }, ...runs.map(({ label }, i) => ({ label, stroke: COLORS[i], width: 2, spanGaps: true }))],
  }, [x, ...series]);
  const t = document.getElementById("latency-table");
  t.append(el("tr"));
  t.rows[0].append(el("th", {}, ""), ...["p50", "p90", "p99", "max"].map((h) => el("th", {}, h + " ms")));
  for (const { label, report: r } of runs) {
    const row = el("tr", { "data-run": label });
    row.append(el("td", {}, label), ...["p50", "p90", "p99", "max"].map((k) => el("td", { "data-figure": k }, fmt(r.latencyMs[k]))));
    t.append(row);
  }
}

// Over time: answers per second, stacked by status class (a 409 burst or a stall shows where it was).
for (const [i, { label, report: r }] of runs.entries()) {
  const rows = r.detail?.timeline ?? [];
  const box = el("div", { class: "chart run", "data-chart": "timeline", "data-run": label });
  document.getElementById("timelines").append(box);
  // Each slice is a band from its start to the next one's, closed at the last slice's end: drawn
  // through the slices' starts alone, a run within one slice was a single point and showed nothing.
  const x = rows.map((s) => s.at);
  if (rows.length > 0) x.push(rows[rows.length - 1].at + r.detail.sliceMs / 1000);
  const stacked = []; let below = rows.map(() => 0);
  for (const [name] of CLASSES) { below = rows.map((s, j) => below[j] + s[name]); stacked.push(rows.length > 0 ? [...below, below[below.length - 1]] : below); }
  // Drawn top band first, so that each lower band covers the one above it down to its own top.
  const order = CLASSES.map((_, k) => k).reverse();
  chart(box, {
    title: label + ": answers per second by status class (slices of " + r.detail.sliceMs + " ms)",
    scales: { x: { time: false } },
    axes: [{ label: "seconds since start" }, { label: "answers/s" }],
    series: [{ label: "second" }, ...order.map((k) => { const [name, color] = CLASSES[k]; return { label: name, stroke: color, fill: color + "99", paths: uPlot.paths.stepped({ align: 1 }), value: (u, v, si, di) => di == null || di >= rows.length ? "-" : fmt(Math.round(rows[di][name])) }; })],
  }, [x, ...order.map((k) => stacked[k])]);
}

// Per operation: how many sends each took, and the worst ones.
for (const [i, { label, report: r }] of runs.entries()) {
  const d = r.detail; if (!d) continue;
  const box = el("div", { class: "run", "data-run": label });
  document.getElementById("operations").append(box);
  box.append(el("h3", {}, label));
  const by = d.operationsBy;
  box.append(el("p", { "data-figure": "operations-by" }, fmt(by.identical) + " operations with identical 2xx answers, " + fmt(by.differing) + " with differing ones, " + fmt(by.no2xx) + " with no 2xx"));
  const counts = Object.entries(d.sendsPerOperation).map(([n, c]) => [Number(n), c]).sort((a, b) => a[0] - b[0]);
  const holder = el("div", { class: "chart", "data-chart": "sends", "data-run": label });
  box.append(holder);
  chart(holder, {
    title: "operations by sends needed",
    scales: { x: { time: false, range: (u, min, max) => [min - 0.5, max + 0.5] } },
    axes: [{ label: "sends", incrs: [1, 2, 5, 10, 20, 50] }, { label: "operations" }],
    series: [{ label: "sends" }, { label: "operations", stroke: COLORS[i], fill: COLORS[i] + "aa", paths: uPlot.paths.bars({ size: [0.6, 60] }), points: { show: false } }],
  }, [counts.map(([n]) => n), counts.map(([, c]) => c)]);
  const t = el("table", { "data-table": "worst" });
  const head = el("tr"); head.append(el("th", {}, "worst operations"), el("th", {}, "sends"), el("th", {}, "2xx differ"), el("th", { class: "statuses" }, "statuses in order"));
  t.append(head);
  for (const op of d.worst.slice(0, 10)) {
    const row = el("tr");
    row.append(el("td", {}, op.key), el("td", {}, String(op.sends)), el("td", {}, op.differing ? "yes" : "no"), el("td", { class: "statuses" }, op.statuses.join(" ")));
    t.append(row);
  }
  box.append(t);
}
document.body.dataset.ready = "1";
`;
