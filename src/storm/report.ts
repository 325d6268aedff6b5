import type { StormReport } from "./types.js";

type Row = [string, (r: StormReport) => string];

const ROWS: Row[] = [
  ["target", (r) => r.target],
  ["pattern", (r) => r.pattern],
  ["operations x sends each", (r) => `${r.operations} x up to ${r.retries + 1}`],
  ["requests sent", (r) => String(r.sends)],
  [
    "duration",
    (r) => `${(r.durationMs / 1000).toFixed(2)} s${r.stoppedEarly ? " (stopped at max duration)" : ""}`,
  ],
  ["throughput", (r) => `${r.throughput} req/s`],
  ["latency p50 / p90 / p99", (r) => `${r.latencyMs.p50} / ${r.latencyMs.p90} / ${r.latencyMs.p99} ms`],
  ["latency max", (r) => `${r.latencyMs.max} ms`],
  [
    "statuses",
    (r) =>
      Object.entries(r.statuses)
        .sort()
        .map(([s, n]) => `${s}: ${n}`)
        .join(", ") || "-",
  ],
  ["replayed (Idempotent-Replayed)", (r) => String(r.replayed)],
  ["conflicts 409 / mismatches 422", (r) => `${r.conflicts} / ${r.mismatches}`],
  ["timeouts / errors", (r) => `${r.timeouts} / ${r.errors}`],
  ["operations with a 2xx", (r) => String(r.consistency.succeeded)],
  ["operations with differing 2xx bodies", (r) => String(r.consistency.inconsistent)],
  ["backend executions", (r) => (r.backend ? String(r.backend.executions) : "n/a (no --stats-url)")],
  ["duplicates created", (r) => (r.backend ? String(r.backend.duplicates) : "n/a (no --stats-url)")],
];

/** A plain-text table, one column per report: side by side when --compare ran a second storm. */
export function formatReports(reports: readonly StormReport[], labels: readonly string[]): string {
  const cells = ROWS.map(([name, cell]) => [name, ...reports.map(cell)]);
  const header = ["", ...labels];
  const widths = header.map((_, c) => Math.max(...[header, ...cells].map((row) => (row[c] ?? "").length)));
  const line = (row: string[]) =>
    row
      .map((cell, c) => cell.padEnd(widths[c] ?? 0))
      .join("  ")
      .trimEnd();
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...cells.map(line)].join("\n");
}
