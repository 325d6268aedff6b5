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
} as const;
export type RecordState = (typeof RecordState)[keyof typeof RecordState];

interface RecordBase {
  fingerprint: string;
  createdAt: number;
  expiresAt: number;
  /** Requests with this key recorded in the attempt log (written in batches, so it may lag a little). */
  attempts?: number;
}
export type StoredRecord =
  /**
   * `fingerprint` is undefined in the moment between another attempt taking the lease and
   * writing its record: its payload is not known yet, so it cannot be compared.
   */
  | (Omit<RecordBase, "fingerprint"> & {
      state: typeof RecordState.InFlight;
      fingerprint: string | undefined;
    })
  | (RecordBase & { state: typeof RecordState.Completed; response: StoredResponse })
  | (RecordBase & { state: typeof RecordState.Unknown });

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

export interface AttemptFilter {
  route?: string | undefined;
  outcome?: string | undefined;
  storeKey?: string | undefined;
  limit: number;
}

export interface Lease {
  fingerprint: string;
  /** How long the lease lasts unless extended. */
  leaseMs: number;
  /** How long the record lives if the attempt ends `unknown` (the route's ttl). */
  ttlMs: number;
  /** Whether an `unknown` record may be taken over by this attempt (onUnknown: retry). */
  takeOverUnknown: boolean;
}

export type BeginResult =
  /** `tookOver`: the key was `unknown` (or its lease had run out) and this attempt now owns it. */
  { acquired: true; token: string; tookOver: boolean } | { acquired: false; record: StoredRecord };

/**
 * What the engine asks of a store. Every write that ends an attempt names the attempt's token and
 * does nothing (returns false) when the record is no longer that attempt's: an attempt that lost
 * its lease cannot overwrite or release the record of the one that took over (fencing).
 */
export interface IdempotencyStore {
  readonly kind: string;
  get(key: string): Promise<StoredRecord | undefined>;
  /** Atomically: if the key is free, take the lease and mark it in flight; else return what is there. */
  begin(key: string, lease: Lease): Promise<BeginResult>;
  extend(key: string, token: string, leaseMs: number): Promise<boolean>;
  complete(key: string, token: string, response: StoredResponse, ttlMs: number): Promise<boolean>;
  markUnknown(key: string, token: string): Promise<boolean>;
  release(key: string, token: string): Promise<boolean>;
  /** Resolves once the key is no longer in flight, with its record then (undefined: released). */
  waitFor(key: string, signal: AbortSignal): Promise<StoredRecord | undefined>;
  /** Resolves when the store answers; rejects with StoreUnavailableError when it does not. */
  ping(): Promise<void>;
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
