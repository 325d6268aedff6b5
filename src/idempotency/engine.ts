import { monotonicNow } from "../clock.js";
import type { RouteSettings } from "../config/index.js";
import {
  AttemptNotStoredError,
  InFlightError,
  KeyReusedError,
  OutcomeUnknownError,
  ResponseTooLargeError,
  StoreUnavailableError,
  UpstreamFailedError,
  UpstreamOutcomeUnknownError,
  UpstreamUnreachableError,
} from "../errors.js";
import { newId } from "../ids.js";
import {
  type BeginResult,
  type IdempotencyStore,
  type LeaseTimes,
  RecordState,
  type StoredRecord,
  type StoredResponse,
} from "../store/types.js";
import { judgeProbe, type ProbeVerdict } from "./probe-answer.js";
import { WaitDeadline } from "./wait-deadline.js";

/** How a protected request ended, as the attempt log and metrics name it. */
export const Outcome = {
  /** This request was forwarded and its response stored. */
  Executed: "executed",
  /**
   * Forwarded although an earlier request with this key may have executed: its outcome was unknown
   * and onUnknown said retry, or reconcile's probe found nothing, or the unknown record had expired.
   */
  Reexecuted: "reexecuted",
  /** Forwarded, but the status is not in `cache`: the key was released. */
  NotStored: "not_stored",
  /**
   * Forwarded, and the upstream answered with a status in `unknownOn` (a 500 after a commit is
   * indistinguishable from one before): the caller got that answer and the key became unknown.
   */
  AnsweredUnknown: "answered_unknown",
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
  /** A key whose outcome was unknown reached the end of its TTL and was begun again. */
  unknownExpired?(key: string): void;
}

export interface EngineOptions {
  events?: EngineEvents;
  /** The engine's clock for deadlines: monotonic by default. */
  now?: () => number;
}

/** Seconds a rejected duplicate is told to wait before retrying an in-flight key. */
const IN_FLIGHT_RETRY_AFTER_S = 1;

/**
 * How often, and for how long, the engine retries a store write that found the store unreachable:
 * the undo of a begin whose reply was lost, and the write that ends an attempt. Every such write is
 * fenced by the attempt's token, so that repeating one that did land changes nothing.
 */
const WRITE_RETRY_MS = 500;
const WRITE_TRIES = 40;

/**
 * The request flow of one protected request, given its key and fingerprint: replay, wait, reject or
 * forward under the lease, then store or release. Knows nothing of HTTP frameworks or stores' insides.
 *
 * A request begins at most once. Whatever it finds there decides its answer; in particular a request
 * that waited on a concurrent duplicate never becomes an attempt of its own, whatever that duplicate
 * ended with: copies of one operation never each execute it.
 */
export class IdempotencyEngine {
  /** Attempts under way, counted by `attempt` itself rather than by a promise callback per attempt. */
  private active = 0;
  /** What `drain` waits on: called when `active` comes down to 0. */
  private idle: (() => void)[] = [];
  private readonly events: EngineEvents;
  private readonly now: () => number;
  private waiting = 0;

  constructor(
    private readonly store: IdempotencyStore,
    options: EngineOptions = {},
  ) {
    this.events = options.events ?? {};
    this.now = options.now ?? monotonicNow;
  }

  /** Attempts currently forwarding. */
  get activeAttempts(): number {
    return this.active;
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
    const token = newId();
    let begun: BeginResult;
    try {
      begun = await this.store.begin(key, {
        token,
        fingerprint,
        leaseMs: settings.lockTtlMs,
        ttlMs: settings.ttlMs,
        settleMs: settings.settleMs,
        takeOverUnknown: settings.onUnknown !== "reject",
      });
    } catch (err) {
      await this.undoBegin(key, token);
      throw err;
    }
    if (begun.acquired) {
      if (begun.took === "expired") this.events.unknownExpired?.(key);
      const reconcile = begun.took === "unknown" && settings.onUnknown === "reconcile" ? probe : undefined;
      return this.attempt(settings, key, token, begun, forward, reconcile);
    }
    const { record } = begun;
    if (record.fingerprint !== fingerprint) throw new KeyReusedError();
    switch (record.state) {
      case RecordState.Completed:
        return replay(record.response, Outcome.Replayed);
      case RecordState.Unknown:
        // Found rather than taken over: onUnknown is reject, so no retry changes this answer.
        throw new OutcomeUnknownError();
      case RecordState.InFlight:
      case RecordState.Released:
        if (settings.concurrent === "reject") throw new InFlightError(IN_FLIGHT_RETRY_AFTER_S);
        return this.waitAndAnswer(key, this.now() + settings.waitTimeoutMs, fingerprint, settings);
    }
  }

  /** Resolves when every attempt under way has ended, or after `timeoutMs`; true when all ended. */
  async drain(timeoutMs: number): Promise<boolean> {
    if (this.active === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const ended = new Promise<boolean>((resolve) => {
      this.idle.push(() => resolve(true));
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    try {
      return await ended;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Not an async function, and handle returns its promise rather than awaiting it: each of
   * thousands of duplicates waiting on one slow request would otherwise keep two suspended frames.
   */
  private waitAndAnswer(
    key: string,
    deadline: number,
    fingerprint: string,
    settings: RouteSettings,
  ): Promise<EngineResult> {
    const limit = new WaitDeadline(Math.max(0, deadline - this.now()));
    this.waiting++;
    return this.store.waitFor(key, limit).then(
      (record) => {
        this.waiting--;
        limit.clear();
        return answerAfterWait(record, fingerprint, settings);
      },
      (err: unknown) => {
        this.waiting--;
        limit.clear();
        throw limit.aborted ? new InFlightError(IN_FLIGHT_RETRY_AFTER_S) : err;
      },
    );
  }

  /**
   * A begin whose reply did not arrive may still have run: then the key is marked in flight under
   * this token although nothing was sent, and would read `unknown` once the lease runs out. A fenced
   * release undoes exactly that (and nothing if the begin never ran). Tried once before the caller
   * is answered, then in the background while the store stays unreachable.
   */
  private async undoBegin(key: string, token: string): Promise<void> {
    const undo = () => this.store.release(key, token);
    try {
      await undo();
    } catch {
      this.retryLater(undo);
    }
  }

  /** Repeats a fenced write in the background until the store takes it (or WRITE_TRIES run out). */
  private retryLater(write: () => Promise<boolean>): void {
    let tries = 1;
    const again = () => {
      const timer = setTimeout(async () => {
        const landed = await write().then(
          () => true,
          (err: unknown) => !(err instanceof StoreUnavailableError),
        );
        if (!landed && ++tries < WRITE_TRIES) again();
      }, WRITE_RETRY_MS);
      timer.unref();
    };
    again();
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
    begun: BeginResult & { acquired: true },
    forward: Forward,
    reconcile?: Probe,
  ): Promise<EngineResult> {
    // A take-over has sent nothing yet; anything else was begun with its settle time running.
    let sent = begun.took !== "unknown";
    const every = Math.max(1, Math.floor(settings.lockTtlMs / 3));
    const keepAlive = setInterval(() => {
      this.store.extend(key, token, times(settings, sent)).then(
        (ok) => {
          if (!ok) this.events.leaseLost?.(key);
        },
        (err) => this.events.storeWriteFailed?.(key, err),
      );
    }, every);
    keepAlive.unref();
    this.active++;
    try {
      if (!sent) {
        if (reconcile) {
          const found = await this.reconcile(settings, key, token, begun.settlesInMs, reconcile);
          if (found) return found;
        }
        // About to send under a key whose earlier request may have executed: start this attempt's
        // own settle time first, which also proves the lease is still this attempt's.
        sent = true;
        if (!(await this.store.extend(key, token, times(settings, true)))) {
          this.events.leaseLost?.(key);
          throw new OutcomeUnknownError(
            "the outcome of an earlier attempt is unknown and this attempt lost its lease before sending",
          ).retryAfter(1);
        }
      }
      let response: StoredResponse;
      try {
        response = await forward();
      } catch (err) {
        if (err instanceof UpstreamUnreachableError) {
          // Nothing reached the upstream: free the key (or give a taken-over one back to unknown).
          await this.settle(key, () => this.store.release(key, token));
          throw err;
        }
        if (err instanceof ResponseTooLargeError) {
          // Executed, answered, but not storable: no retry may execute it again, and since the
          // backend has answered, nothing of it can still commit later (no settle time).
          await this.settle(key, () =>
            this.store.markUnknown(key, token, { ...times(settings, true), settleMs: 0 }),
          );
          throw err;
        }
        // Caddy's rule: once a connection was made, assume the upstream received the request.
        await this.settle(key, () => this.store.markUnknown(key, token, times(settings, true)));
        const failed =
          err instanceof UpstreamFailedError
            ? err
            : new UpstreamFailedError(false, String(err), { cause: err });
        throw new UpstreamOutcomeUnknownError(failed, settings.onUnknown !== "reject");
      }
      if (settings.cache(response.status)) {
        await this.settle(key, () => this.store.complete(key, token, response, settings.ttlMs));
        return {
          response,
          replayed: false,
          outcome: begun.took === "fresh" ? Outcome.Executed : Outcome.Reexecuted,
        };
      }
      if (settings.unknownOn(response.status)) {
        // The backend answered, so nothing of this request can commit later (no settle time), but
        // whether it committed before failing is unknown: a retry must not execute it again.
        await this.settle(key, () =>
          this.store.markUnknown(key, token, { ...times(settings, true), settleMs: 0 }),
        );
        return { response, replayed: false, outcome: Outcome.AnsweredUnknown };
      }
      // Not stored, but the duplicates that waited on this attempt get its answer.
      await this.settle(key, () => this.store.release(key, token, response, settings.waitTimeoutMs));
      return { response, replayed: false, outcome: Outcome.NotStored };
    } finally {
      clearInterval(keepAlive);
      if (--this.active === 0) {
        const waiting = this.idle;
        this.idle = [];
        for (const wake of waiting) wake();
      }
    }
  }

  /**
   * Asks the backend whether the operation of unknown outcome was executed, holding the lease.
   * Found: its answer is stored and replayed. Not found: trusted only once the earlier request can no
   * longer commit (its settle time has passed), and then undefined (the caller forwards the original);
   * before that, and on any other answer, the key stays unknown.
   */
  private async reconcile(
    settings: RouteSettings,
    key: string,
    token: string,
    settlesInMs: number,
    probe: Probe,
  ): Promise<EngineResult | undefined> {
    const settledAt = this.now() + settlesInMs;
    let verdict: ProbeVerdict;
    try {
      const answer = await probe();
      verdict = settings.reconcile
        ? judgeProbe(settings.reconcile, answer)
        : { kind: "unclear", reason: "the route has no reconcile rule" };
    } catch (err) {
      verdict = {
        kind: "unclear",
        reason: `the reconciliation probe failed (${err instanceof Error ? err.message : String(err)})`,
      };
    }
    if (verdict.kind === "found") {
      const { response } = verdict;
      await this.settle(key, () => this.store.complete(key, token, response, settings.ttlMs));
      return { response, replayed: "reconciled", outcome: Outcome.Reconciled };
    }
    const unsettledMs = settledAt - this.now();
    if (verdict.kind === "notFound" && unsettledMs <= 0) return undefined;
    // Nothing was sent: the release gives the key back to unknown, settle time untouched.
    await this.settle(key, () => this.store.release(key, token));
    if (verdict.kind === "notFound") {
      throw new OutcomeUnknownError(
        "the outcome of an earlier attempt is unknown and the backend does not show it yet, but it may still commit it; retry after the time given",
      ).retryAfter(Math.max(1, Math.ceil(unsettledMs / 1000)));
    }
    // The next retry probes again; when the backend will answer it is not known.
    throw new OutcomeUnknownError(
      `the outcome of an earlier attempt is unknown and ${verdict.reason}; it stays unknown`,
    ).retryAfter();
  }

  /**
   * The write that ends an attempt. The caller is answered whatever happens to it; if the store was
   * unreachable, it is repeated in the background, so that a store back within WRITE_TRIES still
   * gets the answer and replays it, rather than holding the key unknown.
   */
  private settle(key: string, write: () => Promise<boolean>): Promise<void> {
    return write().then(
      (landed) => {
        if (!landed) this.events.leaseLost?.(key);
      },
      (err: unknown) => {
        this.events.storeWriteFailed?.(key, err);
        if (err instanceof StoreUnavailableError) this.retryLater(write);
      },
    );
  }
}

/** The lease times of a route; `sent` says whether the attempt has sent its request. */
function times(settings: RouteSettings, sent: boolean): LeaseTimes {
  return { leaseMs: settings.lockTtlMs, ttlMs: settings.ttlMs, settleMs: sent ? settings.settleMs : 0 };
}

/** An answer this request did not execute for: marked replayed, or reconciled when a probe found it. */
function replay(response: StoredResponse, outcome: Outcome): EngineResult {
  return { response, replayed: response.reconciled ? "reconciled" : true, outcome };
}

/** What a request that waited on a concurrent duplicate gets: that duplicate's answer, or a 409. */
function answerAfterWait(
  record: StoredRecord | undefined,
  fingerprint: string,
  settings: RouteSettings,
): EngineResult {
  if (record && record.fingerprint !== fingerprint) throw new KeyReusedError();
  if (record?.state === RecordState.Completed) return replay(record.response, Outcome.Waited);
  if (record?.state === RecordState.Released && record.response) {
    return replay(record.response, Outcome.Waited);
  }
  if (record?.state === RecordState.Unknown) {
    const err = new OutcomeUnknownError();
    // A retry takes the unknown key over (and probes, with reconcile) at once.
    throw settings.onUnknown === "reject" ? err : err.retryAfter(1);
  }
  throw new AttemptNotStoredError();
}
