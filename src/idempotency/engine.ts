import type { RouteSettings } from "../config/index.js";
import {
  InFlightError,
  KeyReusedError,
  OutcomeUnknownError,
  UpstreamFailedError,
  UpstreamOutcomeUnknownError,
  UpstreamUnreachableError,
} from "../errors.js";
import {
  type IdempotencyStore,
  RecordState,
  type StoredRecord,
  type StoredResponse,
} from "../store/types.js";

/** How a protected request ended, as the attempt log and metrics name it. */
export const Outcome = {
  /** This request was forwarded and its response stored. */
  Executed: "executed",
  /** Forwarded, but the status is not in `cache`: the key was released. */
  NotStored: "not_stored",
  /** A stored response was replayed at once. */
  Replayed: "replayed",
  /** The request waited for a concurrent duplicate and got its response. */
  Waited: "waited",
  /** The outcome was unknown and a probe found that the backend had executed it. */
  Reconciled: "reconciled",
} as const;
export type Outcome = (typeof Outcome)[keyof typeof Outcome];

export interface EngineResult {
  response: StoredResponse;
  /** "reconciled": the answer came from a reconciliation probe, not from executing this request. */
  replayed: boolean | "reconciled";
  outcome: Outcome;
}

/** Sends the request upstream. Throws UpstreamUnreachableError when nothing was sent. */
export type Forward = () => Promise<StoredResponse>;

/** Asks the backend whether an operation of unknown outcome was executed (onUnknown: reconcile). */
export type Probe = () => Promise<StoredResponse>;

export interface EngineEvents {
  /** An attempt's lease could not be extended, or its final write was refused: another attempt owns the key. */
  leaseLost?(key: string): void;
  /** A write after forwarding failed; the caller still gets the upstream's answer. */
  storeWriteFailed?(key: string, err: unknown): void;
}

/** Seconds a rejected duplicate is told to wait before retrying an in-flight key. */
const IN_FLIGHT_RETRY_AFTER_S = 1;

/**
 * The request flow of one protected request, given its key and fingerprint: replay, wait, reject or
 * forward under the lease, then store or release. Knows nothing of HTTP frameworks or stores' insides.
 */
export class IdempotencyEngine {
  private readonly active = new Set<Promise<unknown>>();

  constructor(
    private readonly store: IdempotencyStore,
    private readonly events: EngineEvents = {},
  ) {}

  private waiting = 0;

  /** Attempts currently forwarding. */
  get activeAttempts(): number {
    return this.active.size;
  }

  /** Requests currently waiting for a concurrent duplicate to finish. */
  get waitingDuplicates(): number {
    return this.waiting;
  }

  async handle(
    settings: RouteSettings,
    key: string,
    fingerprint: string,
    forward: Forward,
    probe?: Probe,
  ): Promise<EngineResult> {
    let record = await this.store.get(key);
    let waited = false;
    let deadline: number | undefined;
    const takeOverUnknown = settings.onUnknown !== "reject";
    for (;;) {
      if (record?.fingerprint !== undefined && record.fingerprint !== fingerprint) throw new KeyReusedError();
      if (record === undefined || (record.state === RecordState.Unknown && takeOverUnknown)) {
        const begun = await this.store.begin(key, {
          fingerprint,
          leaseMs: settings.lockTtlMs,
          ttlMs: settings.ttlMs,
          takeOverUnknown,
        });
        if (begun.acquired) {
          // Decided by what begin found, not by the earlier read: the key may have turned unknown since.
          const reconcile = begun.tookOver && settings.onUnknown === "reconcile" ? probe : undefined;
          return this.track(this.attempt(settings, key, begun.token, forward, reconcile));
        }
        record = begun.record;
        continue;
      }
      switch (record.state) {
        case RecordState.Completed:
          return {
            response: record.response,
            replayed: record.response.reconciled ? "reconciled" : true,
            outcome: waited ? Outcome.Waited : Outcome.Replayed,
          };
        case RecordState.Unknown:
          throw new OutcomeUnknownError();
        case RecordState.InFlight:
          if (settings.concurrent === "reject") throw new InFlightError(IN_FLIGHT_RETRY_AFTER_S);
          deadline ??= Date.now() + settings.waitTimeoutMs;
          record = await this.waitSettled(key, deadline);
          waited = true;
      }
    }
  }

  /** Resolves when every attempt under way has ended, or after `timeoutMs`; true when all ended. */
  async drain(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    const all = (async () => {
      while (this.active.size > 0) await Promise.allSettled([...this.active]);
      return true as const;
    })();
    try {
      return await Promise.race([all, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  private track<T>(promise: Promise<T>): Promise<T> {
    this.active.add(promise);
    const remove = () => this.active.delete(promise);
    promise.then(remove, remove);
    return promise;
  }

  private async waitSettled(key: string, deadline: number): Promise<StoredRecord | undefined> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), Math.max(0, deadline - Date.now()));
    this.waiting++;
    try {
      return await this.store.waitFor(key, controller.signal);
    } catch (err) {
      if (controller.signal.aborted) throw new InFlightError(IN_FLIGHT_RETRY_AFTER_S);
      throw err;
    } finally {
      this.waiting--;
      clearTimeout(timer);
    }
  }

  /**
   * One attempt that owns the lease. The lease is extended while the upstream call runs, so a slow
   * backend does not let a duplicate in; it is not tied to the caller's connection, so a caller that
   * gives up still leaves the response stored for its retry.
   */
  private async attempt(
    settings: RouteSettings,
    key: string,
    token: string,
    forward: Forward,
    reconcile?: Probe,
  ): Promise<EngineResult> {
    const every = Math.max(1, Math.floor(settings.lockTtlMs / 3));
    const keepAlive = setInterval(() => {
      this.store.extend(key, token, settings.lockTtlMs).then(
        (ok) => {
          if (!ok) this.events.leaseLost?.(key);
        },
        (err) => this.events.storeWriteFailed?.(key, err),
      );
    }, every);
    keepAlive.unref();
    if (reconcile) {
      const found = await this.reconcile(settings, key, token, reconcile).catch((err: unknown) => {
        clearInterval(keepAlive);
        throw err;
      });
      if (found) {
        clearInterval(keepAlive);
        return found;
      }
    }
    let response: StoredResponse;
    try {
      response = await forward();
    } catch (err) {
      clearInterval(keepAlive);
      if (err instanceof UpstreamUnreachableError) {
        // Nothing reached the upstream: free the key so that a retry is a fresh attempt.
        await this.settle(key, () => this.store.release(key, token));
        throw err;
      }
      // Caddy's rule: once a connection was made, assume the upstream received the request.
      await this.settle(key, () => this.store.markUnknown(key, token));
      const failed =
        err instanceof UpstreamFailedError
          ? err
          : new UpstreamFailedError(false, String(err), { cause: err });
      throw new UpstreamOutcomeUnknownError(failed);
    }
    clearInterval(keepAlive);
    if (settings.cache(response.status)) {
      await this.settle(key, () => this.store.complete(key, token, response, settings.ttlMs));
      return { response, replayed: false, outcome: Outcome.Executed };
    }
    await this.settle(key, () => this.store.release(key, token));
    return { response, replayed: false, outcome: Outcome.NotStored };
  }

  /**
   * Asks the backend whether the operation of unknown outcome was executed, holding the lease:
   * found, its answer is stored and replayed; not found, undefined (the caller forwards the
   * original); anything else leaves the key unknown.
   */
  private async reconcile(
    settings: RouteSettings,
    key: string,
    token: string,
    probe: Probe,
  ): Promise<EngineResult | undefined> {
    const rule = settings.reconcile;
    let answer: StoredResponse | undefined;
    let failure = "";
    try {
      answer = await probe();
    } catch (err) {
      failure = err instanceof Error ? err.message : String(err);
    }
    if (answer && rule?.found.includes(answer.status)) {
      const response: StoredResponse = { ...answer, reconciled: true };
      await this.settle(key, () => this.store.complete(key, token, response, settings.ttlMs));
      return { response, replayed: "reconciled", outcome: Outcome.Reconciled };
    }
    if (answer && rule?.notFound.includes(answer.status)) return undefined;
    await this.settle(key, () => this.store.markUnknown(key, token));
    throw new OutcomeUnknownError(
      `the outcome of an earlier attempt is unknown and the reconciliation probe ${
        answer ? `answered ${answer.status}` : `failed (${failure})`
      }; it stays unknown`,
    );
  }

  /** Runs a write that ends an attempt; its failure must not hide the upstream's answer from the caller. */
  private async settle(key: string, write: () => Promise<boolean>): Promise<void> {
    try {
      if (!(await write())) this.events.leaseLost?.(key);
    } catch (err) {
      this.events.storeWriteFailed?.(key, err);
    }
  }
}
