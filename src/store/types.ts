/** A response as stored and replayed: header order and duplicates kept, body as raw bytes. */
export interface StoredResponse {
  status: number;
  headers: readonly (readonly [string, string])[];
  body: Uint8Array;
  /** Learnt from the backend by a reconciliation probe rather than from the request itself. */
  reconciled?: boolean;
}

export const RecordState = {
  /** An attempt holds the lease and is forwarding. */
  InFlight: "in_flight",
  /** A response is stored and replayed until the TTL ends. */
  Completed: "completed",
  /** An attempt sent the request but never learned the outcome (or its gateway died holding the lease). */
  Unknown: "unknown",
  /**
   * The attempt ended with an answer that is not stored (a status outside `cache`, or nothing at all).
   * Kept only briefly, for the duplicates that were waiting on it; a new request treats it as free.
   */
  Released: "released",
} as const;
export type RecordState = (typeof RecordState)[keyof typeof RecordState];

interface RecordBase {
  fingerprint: string;
  createdAt: number;
  /** When the record stops counting (wall-clock ms, for display; stores decide expiry on their own clock). */
  expiresAt: number;
  /** Requests with this key recorded in the attempt log (written in batches, so it may lag a little). */
  attempts?: number;
}
export type StoredRecord =
  | (RecordBase & { state: typeof RecordState.InFlight })
  | (RecordBase & { state: typeof RecordState.Completed; response: StoredResponse })
  | (RecordBase & {
      state: typeof RecordState.Unknown;
      /**
       * How long the backend may still commit the ambiguous request (see Lease.settleMs); a probe's
       * "not found" is not trusted before then. 0 once settled.
       */
      settlesInMs: number;
    })
  | (RecordBase & { state: typeof RecordState.Released; response: StoredResponse | undefined });

/** One protected request, as the attempt log keeps it. */
export interface AttemptEntry {
  time: number;
  requestId: string;
  route: string;
  /** The stored key's hash. */
  storeKey?: string | undefined;
  /** Key material and scope as the operator knows them (JSON), never the payload. */
  material?: string | undefined;
  outcome: string;
  status: number;
  upstreamMs?: number | undefined;
  /** Only with audit.payloads: true. */
  payload?: string | undefined;
}

/** What a look at the store found: problems stop protected requests; warnings put them at risk. */
export interface StoreHealth {
  problems: string[];
  warnings: string[];
}

export interface AttemptFilter {
  route?: string | undefined;
  outcome?: string | undefined;
  storeKey?: string | undefined;
  limit: number;
}

/** The times that govern one attempt's record, given at begin and again with every extension. */
export interface LeaseTimes {
  /** How long the lease lasts unless extended. */
  leaseMs: number;
  /** How long the record lives once the attempt has ended (and at least that long past the lease). */
  ttlMs: number;
  /**
   * How long after its attempt's last sign of life (the lease's end, or the moment it was marked
   * unknown) a request that was sent may still commit on the backend; 0 for an attempt that has not
   * sent anything.
   */
  settleMs: number;
}

export interface Lease extends LeaseTimes {
  /** Made by the caller, so that it can undo a begin whose reply was lost (fenced release). */
  token: string;
  fingerprint: string;
  /** Whether an `unknown` record of the same fingerprint may be taken over (onUnknown: retry, reconcile). */
  takeOverUnknown: boolean;
}

export type BeginResult =
  | {
      acquired: true;
      /**
       * `fresh`: the key was free. `unknown`: this attempt took over a key of unknown outcome (its
       * `settlesInMs` says how long the earlier request may still commit). `expired`: the key had been
       * unknown until its TTL ran out, and is now free again: an unknown outcome being forgotten.
       */
      took: "fresh" | "unknown" | "expired";
      settlesInMs: number;
    }
  /** The record that is there (a fingerprint mismatch is never taken over). */
  | { acquired: false; record: StoredRecord };

/**
 * What ends a wait early: an AbortSignal, or anything with the part of one a wait uses (one listener
 * at a time). Thousands of requests may wait at once, and each AbortController carries an
 * EventTarget with its listener map.
 */
export interface WaitSignal {
  readonly aborted: boolean;
  readonly reason: unknown;
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
}

/**
 * What the engine asks of a store. Every write that ends an attempt names the attempt's token and
 * does nothing (returns false) when the record is no longer that attempt's: an attempt that lost
 * its lease cannot overwrite or release the record of the one that took over (fencing). A failure
 * is a rejected promise, never a synchronous throw.
 */
export interface IdempotencyStore {
  readonly kind: string;
  get(key: string): Promise<StoredRecord | undefined>;
  /**
   * One atomic step, and all a replay costs: if the key is free (or takeable), take the lease and mark
   * it in flight under `lease.token`; else return what is there. There is no moment in which a lease
   * is held and the record does not say so.
   */
  begin(key: string, lease: Lease): Promise<BeginResult>;
  /** Extends the lease and the record's life with it; `times.settleMs` > 0 once the attempt has sent. */
  extend(key: string, token: string, times: LeaseTimes): Promise<boolean>;
  complete(key: string, token: string, response: StoredResponse, ttlMs: number): Promise<boolean>;
  /** The record lives `times.ttlMs` from now; a sent attempt (`settleMs` > 0) starts its settle time. */
  markUnknown(key: string, token: string, times: LeaseTimes): Promise<boolean>;
  /**
   * Frees the key. With a response, duplicates waiting on the attempt get it for `holdMs`; without,
   * they are told the attempt ended unstored.
   */
  release(key: string, token: string, response?: StoredResponse, holdMs?: number): Promise<boolean>;
  /**
   * Resolves once the key is no longer in flight, with its record then (undefined: gone); rejects
   * with the signal's reason once it aborts.
   */
  waitFor(key: string, signal: WaitSignal): Promise<StoredRecord | undefined>;
  /** Resolves when the store answers; rejects with StoreUnavailableError when it does not. */
  ping(): Promise<void>;
  /** What the store's servers allow and refuse, for /readyz and the checks at start (Redis). */
  health?(): Promise<StoreHealth>;
  /**
   * Operator action on an `unknown` key: store the given response as its outcome, or (null) free
   * the key. Does nothing and returns false unless the key is unknown.
   */
  resolveUnknown(key: string, response: StoredResponse | null, ttlMs: number): Promise<boolean>;
  /** Appends to the attempt log (capped) and counts each entry on its key's record, if there is one. */
  appendAttempts(entries: readonly AttemptEntry[]): Promise<void>;
  /** The newest attempt-log entries first, filtered. */
  recentAttempts(filter: AttemptFilter): Promise<AttemptEntry[]>;
  /** Removes a record whatever its state (operator action). */
  purge(key: string): Promise<boolean>;
  close(): Promise<void>;
}
