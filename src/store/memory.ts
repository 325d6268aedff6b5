import { randomUUID } from "node:crypto";
import {
  type AttemptEntry,
  type AttemptFilter,
  type BeginResult,
  type IdempotencyStore,
  type Lease,
  RecordState,
  type StoredRecord,
  type StoredResponse,
} from "./types.js";

interface Entry {
  attempts?: number;
  state: RecordState;
  fingerprint: string;
  createdAt: number;
  expiresAt: number;
  token: string;
  leaseUntil: number;
  response?: StoredResponse;
}

interface WaitGroup {
  resolvers: Set<(record: StoredRecord | undefined) => void>;
  timer: NodeJS.Timeout | undefined;
}

export interface MemoryStoreOptions {
  now?: () => number;
  /** How often expired records are swept out; reads skip them in any case. */
  sweepIntervalMs?: number;
  /** How many attempt-log entries the ring keeps. */
  attemptCapacity?: number;
}

/**
 * The embedded store: one process, records in a Map, leases as timestamps. Waiting duplicates are
 * woken by the write that ends the attempt, or by a timer at the lease's end, never by polling.
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

  constructor(options: MemoryStoreOptions = {}) {
    this.now = options.now ?? Date.now;
    this.ringCapacity = options.attemptCapacity ?? 10_000;
    this.sweeper = setInterval(() => this.sweep(), options.sweepIntervalMs ?? 30_000);
    this.sweeper.unref();
  }

  get size(): number {
    return this.entries.size;
  }

  async get(key: string): Promise<StoredRecord | undefined> {
    const entry = this.read(key);
    return entry && this.view(entry);
  }

  async begin(key: string, lease: Lease): Promise<BeginResult> {
    const entry = this.read(key);
    if (entry) {
      const record = this.view(entry);
      if (!(record.state === RecordState.Unknown && lease.takeOverUnknown))
        return { acquired: false, record };
    }
    const tookOver = entry !== undefined;
    const now = this.now();
    const token = randomUUID();
    this.entries.set(key, {
      state: RecordState.InFlight,
      fingerprint: lease.fingerprint,
      createdAt: now,
      expiresAt: now + lease.ttlMs,
      token,
      leaseUntil: now + lease.leaseMs,
    });
    return { acquired: true, token, tookOver };
  }

  async extend(key: string, token: string, leaseMs: number): Promise<boolean> {
    const entry = this.owned(key, token);
    if (!entry) return false;
    entry.leaseUntil = this.now() + leaseMs;
    return true;
  }

  async complete(key: string, token: string, response: StoredResponse, ttlMs: number): Promise<boolean> {
    const entry = this.owned(key, token);
    if (!entry) return false;
    entry.state = RecordState.Completed;
    entry.response = response;
    entry.expiresAt = this.now() + ttlMs;
    this.notify(key);
    return true;
  }

  async markUnknown(key: string, token: string): Promise<boolean> {
    const entry = this.owned(key, token);
    if (!entry) return false;
    entry.state = RecordState.Unknown;
    this.notify(key);
    return true;
  }

  async release(key: string, token: string): Promise<boolean> {
    if (!this.owned(key, token)) return false;
    this.entries.delete(key);
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
      const record = entry.storeKey === undefined ? undefined : this.read(entry.storeKey);
      if (record) record.attempts = (record.attempts ?? 0) + 1;
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
    const entry = this.read(key);
    if (!entry || this.view(entry).state !== RecordState.Unknown) return false;
    if (response) {
      entry.state = RecordState.Completed;
      entry.response = response;
      entry.expiresAt = this.now() + ttlMs;
      entry.token = "";
    } else {
      this.entries.delete(key);
    }
    this.notify(key);
    return true;
  }

  async purge(key: string): Promise<boolean> {
    const existed = this.entries.delete(key);
    if (existed) this.notify(key);
    return existed;
  }

  /**
   * Waiters of one key share one entry and one timer at the lease's end: ten thousand duplicates
   * of a slow request cost ten thousand promises, not ten thousand timers.
   */
  waitFor(key: string, signal: AbortSignal): Promise<StoredRecord | undefined> {
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
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        g.resolvers.delete(resolver);
        if (g.resolvers.size === 0) this.dropGroup(key, g);
        reject(signal.reason);
      };
      const resolver = (record: StoredRecord | undefined) => {
        signal.removeEventListener("abort", onAbort);
        resolve(record);
      };
      g.resolvers.add(resolver);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Whether the key is no longer in flight, and its record then. */
  private settledRecord(key: string): { done: boolean; record: StoredRecord | undefined } {
    const entry = this.read(key);
    const record = entry && this.view(entry);
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
    const entry = this.read(key);
    return entry?.state === RecordState.InFlight && entry.token === token ? entry : undefined;
  }

  private read(key: string): Entry | undefined {
    const entry = this.entries.get(key);
    if (entry && entry.expiresAt <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return entry;
  }

  /** An in-flight record whose lease ran out belongs to an attempt that died: its outcome is unknown. */
  private view(entry: Entry): StoredRecord {
    const base = {
      fingerprint: entry.fingerprint,
      createdAt: entry.createdAt,
      expiresAt: entry.expiresAt,
      ...(entry.attempts ? { attempts: entry.attempts } : {}),
    };
    if (entry.state === RecordState.Completed && entry.response) {
      return { ...base, state: RecordState.Completed, response: entry.response };
    }
    if (entry.state === RecordState.InFlight && entry.leaseUntil > this.now()) {
      return { ...base, state: RecordState.InFlight };
    }
    return { ...base, state: RecordState.Unknown };
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
    for (const resolve of group.resolvers) resolve(settled.record);
  }

  private sweep(): void {
    const now = this.now();
    for (const [key, entry] of this.entries) if (entry.expiresAt <= now) this.entries.delete(key);
  }
}
