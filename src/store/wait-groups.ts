import { RecordState, type StoredRecord, type WaitSignal } from "./types.js";

export interface WaitGroupHooks {
  /** Reads the key's record. */
  read(key: string): Promise<StoredRecord | undefined>;
  /** How often a group re-reads its key in case a message was missed (or never sent: a dead gateway). */
  pollMs: number;
  /** A key got its first waiter: resolves once a completion of the key will be heard (a subscribe). */
  open?(key: string): Promise<unknown>;
  /** A key lost its last waiter. */
  close?(key: string): void;
}

/** One waiting caller: told the key's record once it is no longer in flight. */
export type Waiter = (record: StoredRecord | undefined) => void;

/**
 * Adds a waiter to `waiters` and resolves with what it is told, or rejects with the signal's reason
 * once it aborts, after `leave` has taken the waiter out again. The stores' waits all go through here.
 */
export function joinWaiters(
  waiters: Set<Waiter>,
  signal: WaitSignal,
  leave: (waiter: Waiter) => void,
): Promise<StoredRecord | undefined> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      leave(waiter);
      reject(signal.reason);
    };
    const waiter: Waiter = (record) => {
      signal.removeEventListener("abort", onAbort);
      resolve(record);
    };
    waiters.add(waiter);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** How many waiters are answered in one turn of the event loop. */
const WAKE_BATCH = 256;

/**
 * Tells waiters the record, a batch per turn of the event loop. Ten thousand waiters answered in one
 * turn hold all their answers' objects at once (headers, writes, log lines and events): each batch
 * finishes its writes before the next starts, and the collector reclaims them in between.
 */
export function wakeWaiters(waiters: readonly Waiter[], record: StoredRecord | undefined): void {
  const wake = (from: number) => {
    const to = Math.min(waiters.length, from + WAKE_BATCH);
    for (let i = from; i < to; i++) (waiters[i] as Waiter)(record);
    if (to < waiters.length) setImmediate(wake, to);
  };
  wake(0);
}

interface Group {
  waiters: Set<Waiter>;
  poll: NodeJS.Timeout;
}

/**
 * The waiting duplicates of a shared store (Redis, PostgreSQL), grouped by key: one subscription
 * and one fallback poll per key, however many wait on it. A group reads its record once it is
 * listening, so a completion between a caller's begin and its wait is not missed; after that, every
 * message (`wake`) and every poll reads it again, until it is no longer in flight.
 */
export class WaitGroups {
  private readonly groups = new Map<string, Group>();

  constructor(private readonly hooks: WaitGroupHooks) {}

  wait(key: string, signal: WaitSignal): Promise<StoredRecord | undefined> {
    if (signal.aborted) return Promise.reject(signal.reason);
    let group = this.groups.get(key);
    if (!group) {
      const created: Group = {
        waiters: new Set(),
        poll: setInterval(() => this.check(key, created), this.hooks.pollMs),
      };
      created.poll.unref();
      this.groups.set(key, created);
      group = created;
      const listening = this.hooks.open?.(key).catch(() => {}) ?? Promise.resolve();
      listening.then(() => this.check(key, created));
    }
    const g = group;
    return joinWaiters(g.waiters, signal, (waiter) => this.leave(key, g, waiter));
  }

  /** A message said the key changed: its waiters, if any, read it again. */
  wake(key: string): void {
    const group = this.groups.get(key);
    if (group) this.check(key, group);
  }

  /** Every group reads its key again (after the listening connection was made again). */
  wakeAll(): void {
    for (const [key, group] of this.groups) this.check(key, group);
  }

  private check(key: string, group: Group): void {
    this.hooks.read(key).then(
      (record) => {
        if (record?.state === RecordState.InFlight) return;
        const waiters = [...group.waiters];
        for (const waiter of waiters) this.leave(key, group, waiter);
        wakeWaiters(waiters, record);
      },
      // The store is unreachable: keep waiting; the waiter's own deadline bounds it.
      () => {},
    );
  }

  private leave(key: string, group: Group, waiter: Waiter): void {
    group.waiters.delete(waiter);
    if (group.waiters.size > 0 || this.groups.get(key) !== group) return;
    clearInterval(group.poll);
    this.groups.delete(key);
    this.hooks.close?.(key);
  }

  clear(): void {
    for (const group of this.groups.values()) clearInterval(group.poll);
    this.groups.clear();
  }
}
