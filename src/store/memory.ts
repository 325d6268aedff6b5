import { monotonicNow } from "../clock.js";
import { StoreFullError } from "../errors.js";
import { EvictionQueue } from "./eviction-queue.js";
import {
  type AttemptEntry,
  type AttemptFilter,
  type BeginResult,
  type IdempotencyStore,
  type Lease,
  type LeaseTimes,
  RecordState,
  type StoredRecord,
  type StoredResponse,
  type WaitSignal,
} from "./types.js";
import { joinWaiters, type Waiter, wakeWaiters } from "./wait-groups.js";

interface Entry {
  attempts?: number;
  state: RecordState;
  fingerprint: string;
  /** Wall-clock ms, for display. */
  createdAt: number;
  token: string;
  /** The rest are on the store's monotonic clock. */
  leaseUntil: number;
  /** Logical expiry: past it, the record no longer counts. */
  expires: number;
  /** Physical removal; later than `expires` for records whose expiry must be reported (unknown). */
  dropAt: number;
  /** Until when a request sent under this key may still commit on the backend. */
  settleUntil: number;
  /** How the attempt got the key: one that took it over from `unknown` gives it back so. */
  took: "fresh" | "unknown" | "expired";
  response?: StoredResponse | undefined;
  /** What the entry is counted as against maxBytes. */
  bytes: number;
}

interface WaitGroup {
  resolvers: Set<Waiter>;
  timer: NodeJS.Timeout | undefined;
}

export interface MemoryStoreOptions {
  /** The store's clock; by default monotonic. */
  now?: () => number;
  /** How often expired records are swept out; reads skip them in any case. */
  sweepIntervalMs?: number;
  /** How many attempt-log entries the ring keeps. */
  attemptCapacity?: number;
  /** At most this many records; completed ones are evicted, oldest first, to make room. */
  maxEntries?: number;
  /** At most about this many bytes of records (bodies, headers and a fixed overhead each). */
  maxBytes?: number;
  /** Told of every completed record evicted to make room. */
  onEvict?: () => void;
}

/**
 * What a record costs beyond its response body and headers: the Map slot, the key, the fields, the
 * response object. About 1 KB, measured with bench/memory-bound.ts.
 */
const ENTRY_OVERHEAD = 1024;

/** Sets `expires` and `dropAt` of a record that counts for `liveMs` and is kept `graceMs` past that. */
function setLifetime(entry: Entry, now: number, liveMs: number, graceMs: number): void {
  entry.expires = now + liveMs;
  entry.dropAt = now + liveMs + graceMs;
}

/**
 * What a key holds right now, expiry decided: `expired` is an unknown record whose TTL has run out;
 * `live` says whether it reads as unknown (marked so, or in flight with its lease run out).
 */
type Classified =
  | { kind: "free"; entry: Entry | undefined }
  | { kind: "expired"; entry: Entry }
  | { kind: "live"; entry: Entry; unknown: boolean };

/**
 * The embedded store: one process, records in a Map, leases as timestamps on a monotonic clock.
 * Waiting duplicates are woken by the write that ends the attempt, or by a timer at the lease's end,
 * never by polling.
 */
export class MemoryStore implements IdempotencyStore {
  readonly kind = "memory";
  private readonly entries = new Map<string, Entry>();
  private readonly waiters = new Map<string, WaitGroup>();
  private readonly now: () => number;
  private readonly sweeper: NodeJS.Timeout;
  private readonly ring: AttemptEntry[] = [];
  private ringNext = 0;
  private readonly ringCapacity: number;
  private readonly maxEntries: number;
  private readonly maxBytes: number;
  private readonly onEvict: () => void;
  private bytes = 0;
  /** Keys of records that may be evicted (completed, or released answers), oldest first. */
  private readonly evictable = new EvictionQueue();

  constructor(options: MemoryStoreOptions = {}) {
    this.now = options.now ?? monotonicNow;
    this.maxEntries = options.maxEntries ?? 100_000;
    this.maxBytes = options.maxBytes ?? 256 * 1024 * 1024;
    this.onEvict = options.onEvict ?? (() => {});
    this.ringCapacity = options.attemptCapacity ?? 10_000;
    this.sweeper = setInterval(() => this.sweep(), options.sweepIntervalMs ?? 30_000);
    this.sweeper.unref();
  }

  get size(): number {
    return this.entries.size;
  }

  /** What the records count as against maxBytes. */
  get countedBytes(): number {
    return this.bytes;
  }

  async get(key: string): Promise<StoredRecord | undefined> {
    const c = this.classify(key);
    return c.kind === "live" ? this.view(c.entry, c.unknown) : undefined;
  }

  async begin(key: string, lease: Lease): Promise<BeginResult> {
    const c = this.classify(key);
    let took: "fresh" | "unknown" | "expired" = c.kind === "expired" ? "expired" : "fresh";
    let settlesInMs = 0;
    const now = this.now();
    // A released record is there for the waiters only: to a new request the key is free.
    if (c.kind === "live" && c.entry.state !== RecordState.Released) {
      if (!c.unknown || !lease.takeOverUnknown || c.entry.fingerprint !== lease.fingerprint) {
        return { acquired: false, record: this.view(c.entry, c.unknown) };
      }
      took = "unknown";
      settlesInMs = Math.max(0, c.entry.settleUntil - now);
    }
    const previous = c.entry;
    if (!previous) this.makeRoom(ENTRY_OVERHEAD + key.length, true);
    this.put(key, {
      state: RecordState.InFlight,
      fingerprint: lease.fingerprint,
      createdAt: Date.now(),
      token: lease.token,
      took,
      leaseUntil: now + lease.leaseMs,
      expires: now + lease.leaseMs + lease.ttlMs,
      dropAt: now + lease.leaseMs + 2 * lease.ttlMs,
      // A take-over has not sent anything yet: the earlier request's settle time stands as it was.
      settleUntil:
        took === "unknown"
          ? (previous?.settleUntil ?? now)
          : lease.settleMs > 0
            ? now + lease.leaseMs + lease.settleMs
            : now,
      attempts: previous?.attempts,
      bytes: 0,
    });
    return { acquired: true, took, settlesInMs };
  }

  async extend(key: string, token: string, times: LeaseTimes): Promise<boolean> {
    const entry = this.owned(key, token);
    const now = this.now();
    // A lease that has run out is not revived: the key already reads unknown to everyone else.
    if (!entry || entry.leaseUntil <= now) return false;
    entry.leaseUntil = now + times.leaseMs;
    setLifetime(entry, now, times.leaseMs + times.ttlMs, times.ttlMs);
    if (times.settleMs > 0) {
      entry.settleUntil = Math.max(entry.settleUntil, now + times.leaseMs + times.settleMs);
    }
    return true;
  }

  async complete(key: string, token: string, response: StoredResponse, ttlMs: number): Promise<boolean> {
    const entry = this.owned(key, token);
    if (!entry) return false;
    entry.state = RecordState.Completed;
    entry.response = response;
    setLifetime(entry, this.now(), ttlMs, 0);
    this.answered(key, entry);
    this.notify(key);
    return true;
  }

  async markUnknown(key: string, token: string, times: LeaseTimes): Promise<boolean> {
    const entry = this.owned(key, token);
    if (!entry) return false;
    const now = this.now();
    entry.state = RecordState.Unknown;
    entry.token = "";
    setLifetime(entry, now, times.ttlMs, times.ttlMs);
    // Now it is known when the attempt stopped waiting: that, not the lease's end, starts the settle time.
    if (times.settleMs > 0) entry.settleUntil = now + times.settleMs;
    this.notify(key);
    return true;
  }

  async release(key: string, token: string, response?: StoredResponse, holdMs = 0): Promise<boolean> {
    const entry = this.owned(key, token);
    if (!entry) return false;
    if (response && holdMs > 0) {
      entry.state = RecordState.Released;
      entry.response = response;
      setLifetime(entry, this.now(), holdMs, 0);
      this.answered(key, entry);
    } else if (entry.took === "unknown") {
      // Nothing was sent: the earlier request's outcome is as unknown as before.
      entry.state = RecordState.Unknown;
      entry.token = "";
    } else {
      this.drop(key);
    }
    this.notify(key);
    return true;
  }

  async ping(): Promise<void> {}

  async appendAttempts(entries: readonly AttemptEntry[]): Promise<void> {
    if (this.ringCapacity === 0) return;
    for (const entry of entries) {
      // A bounded ring: the oldest entry gives way to the newest.
      if (this.ring.length < this.ringCapacity) this.ring.push(entry);
      else this.ring[this.ringNext] = entry;
      this.ringNext = (this.ringNext + 1) % this.ringCapacity;
      const c = entry.storeKey === undefined ? undefined : this.classify(entry.storeKey);
      if (c && c.kind !== "free") c.entry.attempts = (c.entry.attempts ?? 0) + 1;
    }
  }

  async recentAttempts(filter: AttemptFilter): Promise<AttemptEntry[]> {
    const out: AttemptEntry[] = [];
    for (let i = 1; i <= this.ring.length && out.length < filter.limit; i++) {
      const entry = this.ring[(this.ringNext - i + this.ring.length) % this.ring.length] as AttemptEntry;
      if (filter.route !== undefined && entry.route !== filter.route) continue;
      if (filter.outcome !== undefined && entry.outcome !== filter.outcome) continue;
      if (filter.storeKey !== undefined && entry.storeKey !== filter.storeKey) continue;
      out.push(entry);
    }
    return out;
  }

  async resolveUnknown(key: string, response: StoredResponse | null, ttlMs: number): Promise<boolean> {
    const c = this.classify(key);
    if (c.kind !== "live" || !c.unknown) return false;
    const { entry } = c;
    if (response) {
      entry.state = RecordState.Completed;
      entry.response = response;
      setLifetime(entry, this.now(), ttlMs, 0);
      this.answered(key, entry);
    } else {
      this.drop(key);
    }
    this.notify(key);
    return true;
  }

  async purge(key: string): Promise<boolean> {
    const existed = this.drop(key);
    if (existed) this.notify(key);
    return existed;
  }

  /**
   * Waiters of one key share one entry and one timer at the lease's end: ten thousand duplicates
   * of a slow request cost ten thousand promises, not ten thousand timers.
   */
  waitFor(key: string, signal: WaitSignal): Promise<StoredRecord | undefined> {
    if (signal.aborted) return Promise.reject(signal.reason);
    const settled = this.settledRecord(key);
    if (settled.done) return Promise.resolve(settled.record);
    let group = this.waiters.get(key);
    if (!group) {
      group = { resolvers: new Set(), timer: undefined };
      this.waiters.set(key, group);
      this.armLeaseTimer(key, group);
    }
    const g = group;
    return joinWaiters(g.resolvers, signal, (resolver) => {
      g.resolvers.delete(resolver);
      if (g.resolvers.size === 0) this.dropGroup(key, g);
    });
  }

  /** Whether the key is no longer in flight, and its record then. */
  private settledRecord(key: string): { done: boolean; record: StoredRecord | undefined } {
    const c = this.classify(key);
    const record = c.kind === "live" ? this.view(c.entry, c.unknown) : undefined;
    return { done: record?.state !== RecordState.InFlight, record };
  }

  /** A lease that runs out sends no write; this timer is what wakes the waiters then. */
  private armLeaseTimer(key: string, group: WaitGroup): void {
    clearTimeout(group.timer);
    const entry = this.entries.get(key);
    if (!entry) return;
    group.timer = setTimeout(() => this.notify(key), Math.max(1, entry.leaseUntil - this.now() + 1));
  }

  private dropGroup(key: string, group: WaitGroup): void {
    clearTimeout(group.timer);
    if (this.waiters.get(key) === group) this.waiters.delete(key);
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
  }

  /** The entry if the attempt with this token still owns it; its lease may have run out unnoticed. */
  private owned(key: string, token: string): Entry | undefined {
    const c = this.classify(key);
    // A record past its TTL counts for no one, not even the attempt that wrote it.
    const entry = c.kind === "live" ? c.entry : undefined;
    return entry?.state === RecordState.InFlight && entry.token === token ? entry : undefined;
  }

  /**
   * The one place expiry is decided. An in-flight record whose lease ran out belongs to an attempt
   * that died: its outcome is unknown. An unknown record past its TTL is `expired`: free, but a begin
   * says so, so that forgetting an unknown outcome is never silent.
   */
  private classify(key: string): Classified {
    const entry = this.entries.get(key);
    const now = this.now();
    if (!entry) return { kind: "free", entry };
    if (entry.dropAt <= now) {
      this.drop(key);
      return { kind: "free", entry: undefined };
    }
    const unknown =
      entry.state === RecordState.Unknown ||
      (entry.state === RecordState.InFlight && entry.leaseUntil <= now);
    if (entry.expires <= now) return unknown ? { kind: "expired", entry } : { kind: "free", entry };
    return { kind: "live", entry, unknown };
  }

  /** The record as callers see it; built only where one is returned, not on every write's check. */
  private view(entry: Entry, unknown: boolean): StoredRecord {
    const now = this.now();
    const base = {
      fingerprint: entry.fingerprint,
      createdAt: entry.createdAt,
      expiresAt: Date.now() + (entry.expires - now),
      ...(entry.attempts ? { attempts: entry.attempts } : {}),
    };
    if (entry.state === RecordState.Released) {
      return { ...base, state: RecordState.Released, response: entry.response };
    }
    if (entry.state === RecordState.Completed && entry.response) {
      return { ...base, state: RecordState.Completed, response: entry.response };
    }
    if (!unknown) return { ...base, state: RecordState.InFlight };
    return { ...base, state: RecordState.Unknown, settlesInMs: Math.max(0, entry.settleUntil - now) };
  }

  /** Called on every write to a key and when its lease may have run out. */
  private notify(key: string): void {
    const group = this.waiters.get(key);
    if (!group) return;
    const settled = this.settledRecord(key);
    if (!settled.done) {
      // Still in flight (the lease was extended): wait for its new end.
      this.armLeaseTimer(key, group);
      return;
    }
    this.dropGroup(key, group);
    wakeWaiters([...group.resolvers], settled.record);
  }

  private sweep(): void {
    const now = this.now();
    for (const [key, entry] of this.entries) if (entry.dropAt <= now) this.drop(key);
  }

  /** Every record enters through here, so that the bounds are kept in one place. */
  private put(key: string, entry: Entry): void {
    this.drop(key);
    entry.bytes = ENTRY_OVERHEAD + key.length;
    this.bytes += entry.bytes;
    this.entries.set(key, entry);
  }

  /** And leaves through here. */
  private drop(key: string): boolean {
    const entry = this.entries.get(key);
    if (!entry) return false;
    this.bytes -= entry.bytes;
    this.evictable.delete(key);
    this.entries.delete(key);
    return true;
  }

  /** A record now holds an answer: it is counted with it, and may be evicted from now on. */
  private answered(key: string, entry: Entry): void {
    // No attempt owns an answered record any more, and it may be kept for a day.
    entry.token = "";
    const response = entry.response;
    let size = ENTRY_OVERHEAD + key.length;
    if (response) {
      size += response.body.byteLength;
      for (const [name, value] of response.headers) size += name.length + value.length;
    }
    this.bytes += size - entry.bytes;
    entry.bytes = size;
    this.evictable.push(key);
    // Room is made for the answer just stored, never by evicting it: its caller's retry needs it.
    this.makeRoom(0, false, key);
  }

  /**
   * Evicts completed records, oldest first, until `extra` more bytes (and, for a new record, one more
   * entry) fit. Records in flight or unknown are never evicted: that would let a retry execute again.
   * A new record that still does not fit is refused (503), an answer is kept over the bound.
   */
  private makeRoom(extra: number, newEntry: boolean, keep?: string): void {
    while (this.isFull(extra, newEntry)) {
      const key = this.evictable.first();
      // `keep` was made evictable last: when it is the oldest left, nothing else can go.
      if (key === undefined || key === keep) {
        if (newEntry) throw new StoreFullError();
        return;
      }
      this.drop(key);
      this.onEvict();
    }
  }

  private isFull(extra: number, newEntry: boolean): boolean {
    return (newEntry && this.entries.size >= this.maxEntries) || this.bytes + extra > this.maxBytes;
  }
}
