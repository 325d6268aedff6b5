import { createHash, randomBytes } from "node:crypto";
import * as hdr from "hdr-histogram-js";
import { Agent, request } from "undici";
import {
  type BackendStats,
  Pattern,
  type StormDetail,
  type StormOperation,
  type StormOptions,
  type StormReport,
  type StormSecond,
} from "./types.js";

/** Fills {key}, {i} and {run}; nothing else in a template is touched. */
export function render(template: string, vars: { key: string; i: number; run: string }): string {
  return template.replace(/\{(key|i|run)\}/g, (_, name: "key" | "i" | "run") => String(vars[name]));
}

interface SendResult {
  status?: number;
  timedOut?: boolean;
  /** Neither an answer nor a timeout: a network error (or a send abandoned at max duration). */
  failed?: boolean;
  replayed?: boolean;
  bodyHash?: string;
}

/** Statuses after which a client that retries on failure would stop. */
function isFinal(r: SendResult): boolean {
  if (r.status === undefined) return false;
  return r.status < 500 && r.status !== 409 && r.status !== 425 && r.status !== 429;
}

async function readStats(url: string, dispatcher: Agent): Promise<BackendStats> {
  const res = await request(url, { dispatcher, signal: AbortSignal.timeout(10_000) });
  if (res.statusCode !== 200) throw new Error(`--stats-url ${url} answered ${res.statusCode}`);
  return (await res.body.json()) as BackendStats;
}

/** Token bucket of one token: each send waits for its slot. */
function limiter(rate: number | undefined): () => Promise<void> {
  if (!rate) return async () => {};
  const every = 1000 / rate;
  let next = performance.now();
  return async () => {
    const now = performance.now();
    const at = Math.max(now, next);
    next = at + every;
    if (at > now) await new Promise((resolve) => setTimeout(resolve, at - now));
  };
}

/**
 * Runs one storm: `keys` operations, each sent up to `retries + 1` times in the chosen pattern,
 * measuring latency (HDR histogram), statuses, replays, and whether every 2xx answer of an
 * operation was byte-identical. Bounded by count and by `maxDurationMs`.
 */
export async function runStorm(opts: StormOptions): Promise<StormReport> {
  const run = opts.runId ?? randomBytes(4).toString("hex");
  const dispatcher = new Agent({ connections: opts.connections, keepAliveTimeout: 10_000 });
  const histogram = hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 3_600_000_000,
    numberOfSignificantValueDigits: 3,
  });
  const statuses: Record<string, number> = {};
  const count = (label: string) => {
    statuses[label] = (statuses[label] ?? 0) + 1;
  };
  let sends = 0;
  let replayed = 0;
  let done = 0;
  let succeeded = 0;
  let inconsistent = 0;
  const stop = new AbortController();
  const stopTimer = setTimeout(() => stop.abort(new Error("max duration reached")), opts.maxDurationMs);
  const take = limiter(opts.rate);
  const before = opts.statsUrl ? await readStats(opts.statsUrl, dispatcher) : undefined;
  const detail = opts.detail ? new DetailCollector() : undefined;

  async function send(i: number, key: string): Promise<SendResult> {
    await take();
    if (stop.signal.aborted) return {};
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(opts.headers)) headers[name] = render(value, { key, i, run });
    if (opts.keyHeader) headers["idempotency-key"] = key;
    const started = performance.now();
    sends++;
    // A timer of our own, not AbortSignal.timeout: inside AbortSignal.any, Node 20 holds that
    // signal weakly, and once garbage-collected it never fires, so a send would wait forever.
    const timeout = new AbortController();
    const timer = setTimeout(
      () => timeout.abort(new DOMException("the client timeout was reached", "TimeoutError")),
      opts.timeoutMs,
    );
    try {
      const res = await request(opts.target, {
        dispatcher,
        method: opts.method as "POST",
        headers,
        body: opts.method === "GET" || opts.method === "HEAD" ? null : render(opts.body, { key, i, run }),
        signal: AbortSignal.any([stop.signal, timeout.signal]),
      });
      const body = Buffer.from(await res.body.arrayBuffer());
      histogram.recordValue(Math.max(1, Math.round((performance.now() - started) * 1000)));
      count(String(res.statusCode));
      detail?.answered(res.statusCode);
      const wasReplayed = res.headers["idempotent-replayed"] !== undefined;
      if (wasReplayed) replayed++;
      return {
        status: res.statusCode,
        replayed: wasReplayed,
        ...(res.statusCode >= 200 && res.statusCode < 300
          ? { bodyHash: createHash("sha256").update(body).digest("hex") }
          : {}),
      };
    } catch (err) {
      const name = (err as Error).name;
      const timedOut =
        name === "TimeoutError" || (err as { code?: string }).code === "UND_ERR_HEADERS_TIMEOUT";
      count(timedOut ? "timeout" : "error");
      detail?.answered(undefined);
      return timedOut ? { timedOut } : { failed: true };
    } finally {
      clearTimeout(timer);
    }
  }

  async function operation(i: number): Promise<void> {
    const key = `${run}-${String(i).padStart(6, "0")}`;
    const results: SendResult[] = [];
    if (opts.pattern === Pattern.Burst) {
      results.push(...(await Promise.all(Array.from({ length: opts.retries + 1 }, () => send(i, key)))));
    } else {
      for (let attempt = 0; attempt <= opts.retries && !stop.signal.aborted; attempt++) {
        const r = await send(i, key);
        results.push(r);
        if (opts.pattern === Pattern.Timeout ? !r.timedOut && r.status !== undefined : isFinal(r)) break;
        if (opts.pattern === Pattern.Backoff && attempt < opts.retries) {
          // Full jitter (AWS architecture blog): a uniformly random wait up to the exponential bound.
          await new Promise((resolve) => setTimeout(resolve, Math.random() * opts.backoffMs * 2 ** attempt));
        }
      }
    }
    const hashes = new Set(results.map((r) => r.bodyHash).filter((h) => h !== undefined));
    if (hashes.size > 0) succeeded++;
    if (hashes.size > 1) inconsistent++;
    detail?.operation(key, results, hashes.size);
    done++;
    opts.onProgress?.(done, opts.keys);
  }

  const started = performance.now();
  let next = 0;
  const workers = Array.from({ length: Math.min(opts.concurrency, opts.keys) }, async () => {
    while (next < opts.keys && !stop.signal.aborted) await operation(next++);
  });
  await Promise.all(workers);
  const durationMs = performance.now() - started;
  clearTimeout(stopTimer);
  const after = opts.statsUrl ? await readStats(opts.statsUrl, dispatcher) : undefined;
  await dispatcher.close();

  const ms = (us: number) => Math.round(us / 10) / 100;
  const answers = histogram.totalCount;
  return {
    target: opts.target,
    pattern: opts.pattern,
    operations: done,
    retries: opts.retries,
    sends,
    durationMs: Math.round(durationMs),
    throughput: Math.round((answers / durationMs) * 1000),
    latencyMs: {
      p50: ms(histogram.getValueAtPercentile(50)),
      p90: ms(histogram.getValueAtPercentile(90)),
      p99: ms(histogram.getValueAtPercentile(99)),
      max: ms(histogram.maxValue),
      mean: ms(histogram.mean),
    },
    statuses,
    replayed,
    conflicts: statuses["409"] ?? 0,
    mismatches: statuses["422"] ?? 0,
    timeouts: statuses.timeout ?? 0,
    errors: statuses.error ?? 0,
    consistency: { succeeded, inconsistent },
    ...(before && after
      ? {
          backend: {
            executions: after.executions - before.executions,
            duplicates: after.duplicates - before.duplicates,
          },
        }
      : {}),
    stoppedEarly: stop.signal.aborted,
    ...(detail ? { detail: detail.finish(histogram) } : {}),
  };
}

/** Latency at these "nines" (1 - 10^-n) is what an HDR plot draws: dense where the tail is. */
const NINES_STEP = 0.05;
/** The finest slice of the timeline. */
const SLICE_MS = 100;

/** What the HTML report draws, gathered as the storm runs. */
class DetailCollector {
  private readonly start = performance.now();
  private readonly seconds: StormSecond[] = [];
  private readonly sends: Record<string, number> = {};
  private readonly by = { identical: 0, differing: 0, no2xx: 0 };
  private worst: (StormOperation & { rank: number })[] = [];

  answered(status: number | undefined): void {
    const slice = Math.floor((performance.now() - this.start) / SLICE_MS);
    for (let s = this.seconds.length; s <= slice; s++)
      this.seconds.push({ at: (s * SLICE_MS) / 1000, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0, none: 0 });
    const row = this.seconds[slice] as StormSecond;
    if (status === undefined) row.none++;
    else if (status < 300) row["2xx"]++;
    else if (status < 400) row["3xx"]++;
    else if (status < 500) row["4xx"]++;
    else row["5xx"]++;
  }

  operation(key: string, results: readonly SendResult[], distinct2xx: number): void {
    this.sends[results.length] = (this.sends[results.length] ?? 0) + 1;
    if (distinct2xx > 1) this.by.differing++;
    else if (distinct2xx === 0) this.by.no2xx++;
    else this.by.identical++;
    const rank = (distinct2xx > 1 ? 2e6 : distinct2xx === 0 ? 1e6 : 0) + results.length;
    const statuses = results.map((r) =>
      r.status !== undefined ? String(r.status) : r.timedOut ? "timeout" : r.failed ? "error" : "not sent",
    );
    this.worst.push({ key, sends: results.length, statuses, differing: distinct2xx > 1, rank });
    if (this.worst.length > 40) this.keepWorst();
  }

  private keepWorst(): void {
    this.worst = this.worst.sort((a, b) => b.rank - a.rank).slice(0, 20);
  }

  finish(histogram: hdr.Histogram): StormDetail {
    this.keepWorst();
    const percentiles: [number, number][] = [];
    const total = histogram.totalCount;
    const ms = (us: number) => Math.round(us / 10) / 100;
    if (total > 0) {
      // Up to the percentile that one answer in `total` still resolves, then the largest.
      const last = Math.log10(total);
      for (let n = 0; n < last; n += NINES_STEP) {
        const p = 100 * (1 - 10 ** -n);
        percentiles.push([p, ms(histogram.getValueAtPercentile(p))]);
      }
      percentiles.push([100 * (1 - 10 ** -last), ms(histogram.maxValue)]);
    }
    // Slices of 100 ms merged so that a long storm still draws as at most 120 of them.
    const merge = Math.max(1, Math.ceil(this.seconds.length / 120));
    const sliceMs = SLICE_MS * merge;
    const timeline: StormSecond[] = [];
    for (let i = 0; i < this.seconds.length; i += merge) {
      const group = this.seconds.slice(i, i + merge);
      const rate = (k: keyof Omit<StormSecond, "at">) =>
        (group.reduce((sum, row) => sum + row[k], 0) * 1000) / sliceMs;
      timeline.push({
        at: (group[0] as StormSecond).at,
        "2xx": rate("2xx"),
        "3xx": rate("3xx"),
        "4xx": rate("4xx"),
        "5xx": rate("5xx"),
        none: rate("none"),
      });
    }
    return {
      percentiles,
      timeline,
      sliceMs,
      sendsPerOperation: this.sends,
      operationsBy: this.by,
      worst: this.worst.map(({ rank: _, ...op }) => op),
    };
  }
}
