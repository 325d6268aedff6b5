import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";
import type {
  AttemptEntry,
  AttemptFilter,
  BeginResult,
  IdempotencyStore,
  Lease,
  LeaseTimes,
  StoredRecord,
  StoredResponse,
  StoreHealth,
  WaitSignal,
} from "../store/index.js";
import { HotCounter, HotHistogram } from "./hot-metrics.js";
import { droppedLogLines } from "./logger.js";
import type { RequestEvent } from "./observe.js";

const PREFIX = "idempotency_gateway_";

/**
 * Everything the gateway exposes to Prometheus, in one registry per process. What every request
 * touches is a HotCounter or HotHistogram; the rest are prom-client's own.
 */
export class GatewayMetrics {
  readonly registry = new Registry();
  readonly requests = new HotCounter({
    name: `${PREFIX}requests_total`,
    help: "Protected requests by route and outcome",
    labelNames: ["route", "outcome"] as const,
    registers: [this.registry],
  });
  readonly upstreamSeconds = new HotHistogram({
    name: `${PREFIX}upstream_duration_seconds`,
    help: "Time waiting on the upstream for protected requests that called it",
    labelNames: ["route"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly overheadSeconds = new HotHistogram({
    name: `${PREFIX}overhead_seconds`,
    help: "Time a protected request spent in the gateway itself (total minus upstream), waited requests excluded",
    labelNames: ["route"] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });
  readonly storeErrors = new HotCounter({
    name: `${PREFIX}store_errors_total`,
    help: "Store operations that failed",
    labelNames: ["op"] as const,
    registers: [this.registry],
  });
  readonly storeSeconds = new HotHistogram({
    name: `${PREFIX}store_duration_seconds`,
    help: "Latency of store operations",
    labelNames: ["op"] as const,
    buckets: [0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2],
    registers: [this.registry],
  });
  readonly unknownExpired = new Counter({
    name: `${PREFIX}unknown_expired_total`,
    help: "Keys whose outcome was unknown until their TTL ran out, then begun again (a duplicate is possible)",
    registers: [this.registry],
  });
  readonly evictions = new Counter({
    name: `${PREFIX}store_evictions_total`,
    help: "Completed records the memory store evicted before their TTL to stay within its bounds (a retry of one executes again)",
    registers: [this.registry],
  });
  readonly auditLost = new Counter({
    name: `${PREFIX}audit_rows_lost_total`,
    help: "CallbackLog rows lost because the database was unreachable and the spool was full",
    registers: [this.registry],
  });
  readonly replicaShortfalls = new Counter({
    name: `${PREFIX}store_replica_shortfalls_total`,
    help: "Begins (refused) and answers (sent) that did not reach store.redis.replicas replicas in time",
    labelNames: ["step"] as const,
    registers: [this.registry],
  });
  readonly unprotected = new HotCounter({
    name: `${PREFIX}unprotected_forwards_total`,
    help: "Requests forwarded without protection because the store was unreachable (failMode: open)",
    labelNames: ["route"] as const,
    registers: [this.registry],
  });

  constructor(engine: { readonly activeAttempts: number; readonly waitingDuplicates: number }) {
    new Gauge({
      name: `${PREFIX}attempts_in_flight`,
      help: "Attempts forwarding to the upstream now",
      registers: [this.registry],
      collect() {
        this.set(engine.activeAttempts);
      },
    });
    new Gauge({
      name: `${PREFIX}waiting_duplicates`,
      help: "Requests waiting now for a concurrent duplicate to finish",
      registers: [this.registry],
      collect() {
        this.set(engine.waitingDuplicates);
      },
    });
    let droppedSeen = 0;
    new Counter({
      name: `${PREFIX}log_lines_dropped_total`,
      help: "Log lines dropped because standard output could not keep up (log.buffer was full)",
      registers: [this.registry],
      collect() {
        const dropped = droppedLogLines();
        this.inc(dropped - droppedSeen);
        droppedSeen = dropped;
      },
    });
    collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
  }

  observe(event: RequestEvent): void {
    this.requests.inc(event);
    if (event.upstreamMs !== undefined) this.upstreamSeconds.observe(event, event.upstreamMs / 1000);
    if (event.outcome === "unprotected") this.unprotected.inc(event);
    // Waiting for a duplicate is not overhead; a waited request's time is the first attempt's.
    if (event.outcome !== "waited") {
      this.overheadSeconds.observe(event, Math.max(0, event.totalMs - (event.upstreamMs ?? 0)) / 1000);
    }
  }
}

/** The `op` label of each store operation, made once. */
const OP = {
  get: { op: "get" },
  begin: { op: "begin" },
  extend: { op: "extend" },
  complete: { op: "complete" },
  markUnknown: { op: "mark_unknown" },
  release: { op: "release" },
  ping: { op: "ping" },
  purge: { op: "purge" },
  attemptLog: { op: "attempt_log" },
  attemptLogRead: { op: "attempt_log_read" },
  resolve: { op: "resolve" },
} as const;

/** A store that times every operation and counts failures; waiting is not timed. */
export class MeasuredStore implements IdempotencyStore {
  constructor(
    private readonly inner: IdempotencyStore,
    private readonly metrics: GatewayMetrics,
  ) {}

  get kind(): string {
    return this.inner.kind;
  }

  /**
   * Times the operation that `work` started at `started`. A `then` rather than an async wrapper:
   * every begin and complete of every request passes here.
   */
  private timed<T>(labels: { op: string }, started: number, work: Promise<T>): Promise<T> {
    return work.then(
      (value) => {
        this.metrics.storeSeconds.observe(labels, (performance.now() - started) / 1000);
        return value;
      },
      (err: unknown) => {
        this.metrics.storeErrors.inc(labels);
        this.metrics.storeSeconds.observe(labels, (performance.now() - started) / 1000);
        throw err;
      },
    );
  }

  get(key: string): Promise<StoredRecord | undefined> {
    return this.timed(OP.get, performance.now(), this.inner.get(key));
  }
  begin(key: string, lease: Lease): Promise<BeginResult> {
    return this.timed(OP.begin, performance.now(), this.inner.begin(key, lease));
  }
  extend(key: string, token: string, times: LeaseTimes): Promise<boolean> {
    return this.timed(OP.extend, performance.now(), this.inner.extend(key, token, times));
  }
  complete(key: string, token: string, response: StoredResponse, ttlMs: number): Promise<boolean> {
    return this.timed(OP.complete, performance.now(), this.inner.complete(key, token, response, ttlMs));
  }
  markUnknown(key: string, token: string, times: LeaseTimes): Promise<boolean> {
    return this.timed(OP.markUnknown, performance.now(), this.inner.markUnknown(key, token, times));
  }
  release(key: string, token: string, response?: StoredResponse, holdMs?: number): Promise<boolean> {
    return this.timed(OP.release, performance.now(), this.inner.release(key, token, response, holdMs));
  }
  waitFor(key: string, signal: WaitSignal): Promise<StoredRecord | undefined> {
    return this.inner.waitFor(key, signal);
  }
  ping(): Promise<void> {
    return this.timed(OP.ping, performance.now(), this.inner.ping());
  }
  health(): Promise<StoreHealth> {
    return this.inner.health?.() ?? Promise.resolve({ problems: [], warnings: [] });
  }
  purge(key: string): Promise<boolean> {
    return this.timed(OP.purge, performance.now(), this.inner.purge(key));
  }
  appendAttempts(entries: readonly AttemptEntry[]): Promise<void> {
    return this.timed(OP.attemptLog, performance.now(), this.inner.appendAttempts(entries));
  }
  recentAttempts(filter: AttemptFilter): Promise<AttemptEntry[]> {
    return this.timed(OP.attemptLogRead, performance.now(), this.inner.recentAttempts(filter));
  }
  resolveUnknown(key: string, response: StoredResponse | null, ttlMs: number): Promise<boolean> {
    return this.timed(OP.resolve, performance.now(), this.inner.resolveUnknown(key, response, ttlMs));
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
