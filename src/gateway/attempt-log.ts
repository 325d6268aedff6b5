import type { Logger } from "pino";
import type { AttemptEntry, IdempotencyStore } from "../store/index.js";
import type { RequestEvent } from "./observe.js";

export interface AttemptLogOptions {
  /** How long an entry may wait for its batch. */
  flushMs?: number;
  /** A batch this large is written at once. */
  maxBatch?: number;
}

/**
 * Writes the attempt log in batches, off the request path: a request never waits for its log entry,
 * and a replay still costs one store round trip. A batch that cannot be written is dropped with a
 * warning (the requests themselves were answered; the store's outage is counted elsewhere).
 */
export class AttemptLog {
  private buffer: AttemptEntry[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly flushMs: number;
  private readonly maxBatch: number;
  private pending: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: IdempotencyStore,
    private readonly logger: Logger,
    options: AttemptLogOptions = {},
  ) {
    this.flushMs = options.flushMs ?? 100;
    this.maxBatch = options.maxBatch ?? 500;
  }

  add(ev: RequestEvent): void {
    this.buffer.push({
      time: ev.time,
      requestId: ev.requestId,
      route: ev.route,
      storeKey: ev.storeKey,
      material:
        ev.material === undefined
          ? undefined
          : JSON.stringify({
              key: ev.material,
              scope: ev.scope ?? [],
              ...(ev.identity ? { identity: ev.identity } : {}),
            }),
      outcome: ev.outcome,
      status: ev.status,
      upstreamMs: ev.upstreamMs === undefined ? undefined : Math.round(ev.upstreamMs * 10) / 10,
      payload: ev.payload,
    });
    if (this.buffer.length >= this.maxBatch) void this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => void this.flush(), this.flushMs);
      this.timer.unref();
    }
  }

  /** Writes what is buffered; resolves once every batch so far has been written (or dropped). */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.buffer;
    this.buffer = [];
    if (batch.length > 0) {
      this.pending = this.pending.then(() =>
        this.store.appendAttempts(batch).catch((err: Error) => {
          this.logger.warn({ err: err.message, entries: batch.length }, "attempt log batch dropped");
        }),
      );
    }
    return this.pending;
  }
}
