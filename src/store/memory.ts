import { randomUUID } from "node:crypto";
import {
  type BeginResult,
  type IdempotencyStore,
  type Lease,
  RecordState,
  type StoredRecord,
  type StoredResponse,
} from "./types.js";

interface Entry {
  state: RecordState;
  fingerprint: string;
  createdAt: number;
  expiresAt: number;
  token: string;
  leaseUntil: number;
  response?: StoredResponse;
}

export interface MemoryStoreOptions {
  now?: () => number;
  /** How often expired records are swept out; reads skip them in any case. */
  sweepIntervalMs?: number;
}

/**
 * The embedded store: one process, records in a Map, leases as timestamps. Waiting duplicates are
 * woken by the write that ends the attempt, or by a timer at the lease's end, never by polling.
 */
export class MemoryStore implements IdempotencyStore {
  readonly kind = "memory";
  private readonly entries = new Map<string, Entry>();
  private readonly waiters = new Map<string, Set<() => void>>();
  private readonly now: () => number;
  private readonly sweeper: NodeJS.Timeout;

  constructor(options: MemoryStoreOptions = {}) {
    this.now = options.now ?? Date.now;
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
    return { acquired: true, token };
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

  async purge(key: string): Promise<boolean> {
    const existed = this.entries.delete(key);
    if (existed) this.notify(key);
    return existed;
  }

  waitFor(key: string, signal: AbortSignal): Promise<StoredRecord | undefined> {
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const set = this.waiters.get(key) ?? new Set();
      const cleanup = () => {
        clearTimeout(timer);
        set.delete(check);
        if (set.size === 0) this.waiters.delete(key);
        signal.removeEventListener("abort", onAbort);
      };
      const onAbort = () => {
        cleanup();
        reject(signal.reason);
      };
      // Called on every write to the key and when the lease may have run out.
      const check = () => {
        const entry = this.read(key);
        const record = entry && this.view(entry);
        if (record?.state === RecordState.InFlight && entry) {
          clearTimeout(timer);
          timer = setTimeout(check, Math.max(1, entry.leaseUntil - this.now() + 1));
          return;
        }
        cleanup();
        resolve(record);
      };
      if (signal.aborted) return reject(signal.reason);
      set.add(check);
      this.waiters.set(key, set);
      signal.addEventListener("abort", onAbort, { once: true });
      check();
    });
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
    const base = { fingerprint: entry.fingerprint, createdAt: entry.createdAt, expiresAt: entry.expiresAt };
    if (entry.state === RecordState.Completed && entry.response) {
      return { ...base, state: RecordState.Completed, response: entry.response };
    }
    if (entry.state === RecordState.InFlight && entry.leaseUntil > this.now()) {
      return { ...base, state: RecordState.InFlight };
    }
    return { ...base, state: RecordState.Unknown };
  }

  private notify(key: string): void {
    const set = this.waiters.get(key);
    if (set) for (const check of [...set]) check();
  }

  private sweep(): void {
    const now = this.now();
    for (const [key, entry] of this.entries) if (entry.expiresAt <= now) this.entries.delete(key);
  }
}
