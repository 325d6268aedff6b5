import { createHash, randomBytes } from "node:crypto";
import * as hdr from "hdr-histogram-js";
import { Agent, request } from "undici";
import { type BackendStats, Pattern, type StormOptions, type StormReport } from "./types.js";

export const DEFAULT_BODY = '{"invoiceNumber":"{key}","transactionId":"T-{i}","amount":{i}}';

/** Fills {key}, {i} and {run}; nothing else in a template is touched. */
export function render(template: string, vars: { key: string; i: number; run: string }): string {
  return template.replace(/\{(key|i|run)\}/g, (_, name: "key" | "i" | "run") => String(vars[name]));
}

interface SendResult {
  status?: number;
  timedOut?: boolean;
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
      return { timedOut };
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
  };
}
