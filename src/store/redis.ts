import { Redis } from "ioredis";
import Redlock, { ExecutionError, type Lock, ResourceLockedError } from "redlock";
import { StoreUnavailableError } from "../errors.js";
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

export interface RedisStoreOptions {
  url: string;
  prefix: string;
  /** How often a waiting duplicate re-reads the record in case a completion message was missed. */
  pollMs?: number;
  /** About how many attempt-log entries the stream keeps (XADD MAXLEN ~). */
  attemptCapacity?: number;
  /** Longest time one store command may take before the store counts as unavailable. */
  commandTimeoutMs?: number;
  now?: () => number;
}

const FIELDS = "'state', 'fp', 'created', 'expires', 'status', 'headers', 'body', 'recon', 'attempts'";

/**
 * Fencing, at the head of every script that ends an attempt: only the attempt whose token
 * (ARGV[1]) the in-flight record carries may write; any other gets 0 and changes nothing.
 */
const OWNED_BY_ARGV1 = `local cur = redis.call('HMGET', KEYS[1], 'token', 'state')
    if cur[1] ~= ARGV[1] or cur[2] ~= 'in_flight' then return 0 end`;

/**
 * One Lua script per atomic step (ioredis defineCommand sends EVALSHA). KEYS[1] is the record
 * (a hash), KEYS[2] the redlock lock key whose value is the owning attempt's token. A record that
 * says in_flight while no lock exists belongs to an attempt whose lease ran out: it reads as unknown.
 */
const SCRIPTS = {
  // The record and whether a lease is held, in one round trip: all a replay costs.
  idemGet: `
    local r = redis.call('HMGET', KEYS[1], ${FIELDS})
    r[10] = redis.call('EXISTS', KEYS[2])
    return r`,
  // Runs while this attempt holds the lock (ARGV[1] = its value). Marks the key in flight unless a
  // record is there that may not be taken over; then gives the lock back and returns the record.
  idemBegin: `
    local state = redis.call('HGET', KEYS[1], 'state')
    local takeOver = ARGV[5] == '1' and (state == 'unknown' or state == 'in_flight')
    if state and not takeOver then
      if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
      local r = redis.call('HMGET', KEYS[1], ${FIELDS})
      r[10] = 0
      return r
    end
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[1], 'state', 'in_flight', 'token', ARGV[1], 'fp', ARGV[2],
      'created', ARGV[3], 'expires', tonumber(ARGV[3]) + tonumber(ARGV[4]))
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    if state then return 2 end
    return 1`,
  // The writes that end an attempt: each only if the record is still this attempt's (fencing), each
  // also frees the lock (like redlock's release: only if it holds this value) and wakes waiters.
  idemComplete: `
    ${OWNED_BY_ARGV1}
    redis.call('HSET', KEYS[1], 'state', 'completed', 'status', ARGV[2], 'headers', ARGV[3], 'body', ARGV[4],
      'expires', tonumber(ARGV[6]) + tonumber(ARGV[5]), 'recon', ARGV[8])
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
    if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
    redis.call('PUBLISH', ARGV[7], 'completed')
    return 1`,
  idemUnknown: `
    ${OWNED_BY_ARGV1}
    redis.call('HSET', KEYS[1], 'state', 'unknown')
    if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
    redis.call('PUBLISH', ARGV[2], 'unknown')
    return 1`,
  idemRelease: `
    ${OWNED_BY_ARGV1}
    redis.call('DEL', KEYS[1])
    if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
    redis.call('PUBLISH', ARGV[2], 'released')
    return 1`,
  // Operator resolution of an unknown key (in_flight with no lease is unknown too): ARGV[1] = 'store'
  // writes the given response as completed, anything else frees the key.
  idemResolve: `
    local state = redis.call('HGET', KEYS[1], 'state')
    local unknown = state == 'unknown' or (state == 'in_flight' and redis.call('EXISTS', KEYS[2]) == 0)
    if not unknown then return 0 end
    if ARGV[1] == 'store' then
      redis.call('HSET', KEYS[1], 'state', 'completed', 'token', '', 'status', ARGV[2], 'headers', ARGV[3],
        'body', ARGV[4], 'expires', tonumber(ARGV[6]) + tonumber(ARGV[5]), 'recon', '0')
      redis.call('PEXPIRE', KEYS[1], ARGV[5])
    else
      redis.call('DEL', KEYS[1])
    end
    redis.call('PUBLISH', ARGV[7], 'resolved')
    return 1`,
  // The attempt log, one batch per call: KEYS[1] is the capped stream, KEYS[i + 1] the record of
  // entry i (or the stream again when the entry has no key). Counts land only on existing records.
  idemAttempts: `
    for i = 2, #ARGV do
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i])
      local rec = KEYS[i]
      if rec ~= KEYS[1] and redis.call('EXISTS', rec) == 1 then redis.call('HINCRBY', rec, 'attempts', 1) end
    end
    return #ARGV - 1`,
  idemPurge: `
    local n = redis.call('DEL', KEYS[1], KEYS[2])
    redis.call('PUBLISH', ARGV[1], 'purged')
    return n`,
} as const;

type Reply = (Buffer | null)[] | number | null;
type ScriptCommands = {
  [name in `${keyof typeof SCRIPTS}Buffer`]: (...args: (string | Buffer | number)[]) => Promise<Reply>;
};

interface WaitGroup {
  waiters: Set<(record: StoredRecord | undefined) => void>;
  ready: Promise<unknown>;
  poll: NodeJS.Timeout;
}

/**
 * The shared store: records in Redis hashes (bodies as raw bytes), the per-key lease a redlock lock,
 * completion announced on a pub/sub channel per key. Key names hold only the engine's hash of the
 * key material, never a client string.
 *
 * redlock is pinned at 5.0.0-beta.2: its `acquire` and `extend` are used as they are; its `using()`
 * auto-extension is not (known bugs), the engine extends the lease itself. Releases are folded into
 * the scripts that end an attempt, so that a first attempt costs four round trips: read, lock,
 * mark in flight, store-and-unlock.
 */
export class RedisStore implements IdempotencyStore {
  readonly kind = "redis";
  private readonly redis: Redis & ScriptCommands;
  private readonly sub: Redis;
  private readonly redlock: Redlock;
  private readonly locks = new Map<string, Lock>();
  private readonly groups = new Map<string, WaitGroup>();
  private readonly now: () => number;
  private readonly pollMs: number;

  constructor(private readonly options: RedisStoreOptions) {
    this.now = options.now ?? Date.now;
    this.pollMs = options.pollMs ?? 1_000;
    const common = {
      // Fail fast instead of queueing while disconnected: a request must get 503, not hang.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: options.commandTimeoutMs ?? 2_000,
      connectTimeout: 2_000,
      retryStrategy: (times: number) => Math.min(50 * 2 ** times, 1_000),
    };
    // Auto-pipelining sends the commands of concurrent requests issued in one tick in one write.
    this.redis = new Redis(options.url, { ...common, enableAutoPipelining: true }) as Redis & ScriptCommands;
    this.sub = new Redis(options.url, { ...common, enableOfflineQueue: true, commandTimeout: undefined });
    this.redis.on("error", () => {});
    this.sub.on("error", () => {});
    for (const [name, lua] of Object.entries(SCRIPTS)) {
      // The attempt-log script takes one key per entry, so its key count is given per call.
      this.redis.defineCommand(name, name === "idemAttempts" ? { lua } : { numberOfKeys: 2, lua });
    }
    this.redlock = new Redlock([this.redis], { retryCount: 0, driftFactor: 0.01 });
    this.sub.on("message", (channel: string) => {
      const group = this.groups.get(channel);
      if (group) this.check(channel, group);
    });
    // Load the scripts once per connection so that every call is a single EVALSHA round trip.
    this.redis.on("ready", () => {
      const all = [...Object.values(SCRIPTS), ...Object.values(this.redlock.scripts).map((s) => s.value)];
      for (const lua of all) this.redis.script("LOAD", lua).catch(() => {});
    });
  }

  /** Resolves once connected, or after `timeoutMs` (the gateway starts anyway and answers 503 until then). */
  async connect(timeoutMs = 5_000): Promise<boolean> {
    if (this.redis.status === "ready") return true;
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.redis.once("ready", () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  private rec(key: string): string {
    // The hash tag keeps record and lock in one cluster slot, as one script needs.
    return `${this.options.prefix}{${key}}:r`;
  }
  private lockKey(key: string): string {
    return `${this.options.prefix}{${key}}:l`;
  }
  private channel(key: string): string {
    return `${this.options.prefix}{${key}}:done`;
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw new StoreUnavailableError(`${what}: ${(err as Error).message}`, { cause: err });
    }
  }

  async get(key: string): Promise<StoredRecord | undefined> {
    const reply = await this.call("read", () => this.redis.idemGetBuffer(this.rec(key), this.lockKey(key)));
    return decode(reply, true);
  }

  async begin(key: string, lease: Lease): Promise<BeginResult> {
    let lock: Lock;
    try {
      lock = await this.redlock.acquire([this.lockKey(key)], lease.leaseMs);
    } catch (err) {
      if (!(await isLockedError(err))) {
        throw new StoreUnavailableError(`lock: ${(err as Error).message}`, { cause: err });
      }
      const record = await this.get(key);
      // Locked, but the owner has not written its record yet: it is in flight all the same.
      return {
        acquired: false,
        record: record ?? { state: RecordState.InFlight, fingerprint: undefined, createdAt: 0, expiresAt: 0 },
      };
    }
    const now = this.now();
    const reply = await this.call("begin", () =>
      this.redis.idemBeginBuffer(
        this.rec(key),
        this.lockKey(key),
        lock.value,
        lease.fingerprint,
        now,
        lease.ttlMs,
        lease.takeOverUnknown ? "1" : "0",
      ),
    );
    if (reply === 1 || reply === 2) {
      this.locks.set(lock.value, lock);
      return { acquired: true, token: lock.value, tookOver: reply === 2 };
    }
    const record = decode(reply, false);
    if (!record) throw new StoreUnavailableError("begin: the record vanished while locked");
    return { acquired: false, record };
  }

  async extend(_key: string, token: string, leaseMs: number): Promise<boolean> {
    const lock = this.locks.get(token);
    if (!lock) return false;
    try {
      this.locks.set(token, await lock.extend(leaseMs));
      return true;
    } catch (err) {
      if (await isLockedError(err)) return false;
      throw new StoreUnavailableError(`extend: ${(err as Error).message}`, { cause: err });
    }
  }

  async complete(key: string, token: string, response: StoredResponse, ttlMs: number): Promise<boolean> {
    this.locks.delete(token);
    const reply = await this.call("complete", () =>
      this.redis.idemCompleteBuffer(
        this.rec(key),
        this.lockKey(key),
        token,
        response.status,
        JSON.stringify(response.headers),
        Buffer.from(response.body.buffer, response.body.byteOffset, response.body.byteLength),
        ttlMs,
        this.now(),
        this.channel(key),
        response.reconciled ? "1" : "0",
      ),
    );
    return reply === 1;
  }

  async markUnknown(key: string, token: string): Promise<boolean> {
    this.locks.delete(token);
    const reply = await this.call("mark unknown", () =>
      this.redis.idemUnknownBuffer(this.rec(key), this.lockKey(key), token, this.channel(key)),
    );
    return reply === 1;
  }

  async release(key: string, token: string): Promise<boolean> {
    this.locks.delete(token);
    const reply = await this.call("release", () =>
      this.redis.idemReleaseBuffer(this.rec(key), this.lockKey(key), token, this.channel(key)),
    );
    return reply === 1;
  }

  async resolveUnknown(key: string, response: StoredResponse | null, ttlMs: number): Promise<boolean> {
    const reply = await this.call("resolve", () =>
      this.redis.idemResolveBuffer(
        this.rec(key),
        this.lockKey(key),
        response ? "store" : "release",
        response?.status ?? 0,
        JSON.stringify(response?.headers ?? []),
        response ? Buffer.from(response.body.buffer, response.body.byteOffset, response.body.byteLength) : "",
        ttlMs,
        this.now(),
        this.channel(key),
      ),
    );
    return reply === 1;
  }

  /** The attempt log's stream: one per prefix, outside any key's hash tag. */
  private attemptsKey(): string {
    return `${this.options.prefix}attempts`;
  }

  async appendAttempts(entries: readonly AttemptEntry[]): Promise<void> {
    const cap = this.options.attemptCapacity ?? 10_000;
    if (entries.length === 0 || cap === 0) return;
    const stream = this.attemptsKey();
    const keys = entries.map((e) => (e.storeKey === undefined ? stream : this.rec(e.storeKey)));
    await this.call("attempt log", () =>
      this.redis.idemAttemptsBuffer(
        1 + keys.length,
        stream,
        ...keys,
        cap,
        ...entries.map((e) => JSON.stringify(e)),
      ),
    );
  }

  async recentAttempts(filter: AttemptFilter): Promise<AttemptEntry[]> {
    const cap = this.options.attemptCapacity ?? 10_000;
    const rows = await this.call("attempt log", () =>
      this.redis.xrevrange(this.attemptsKey(), "+", "-", "COUNT", Math.max(1, Math.min(cap, 100_000))),
    );
    const out: AttemptEntry[] = [];
    for (const [, fields] of rows) {
      if (out.length >= filter.limit) break;
      const entry = JSON.parse(String(fields[1])) as AttemptEntry;
      if (filter.route !== undefined && entry.route !== filter.route) continue;
      if (filter.outcome !== undefined && entry.outcome !== filter.outcome) continue;
      if (filter.storeKey !== undefined && entry.storeKey !== filter.storeKey) continue;
      out.push(entry);
    }
    return out;
  }

  async ping(): Promise<void> {
    await this.call("ping", () => this.redis.ping());
  }

  async purge(key: string): Promise<boolean> {
    const reply = await this.call("purge", () =>
      this.redis.idemPurgeBuffer(this.rec(key), this.lockKey(key), this.channel(key)),
    );
    return typeof reply === "number" && reply > 0;
  }

  /**
   * Waiters of one key share a subscription and a fallback poll. The subscription is made before the
   * first read, so a completion between the two cannot be missed; the poll covers a lost message and
   * a lease that ran out without any message (a crashed gateway).
   */
  waitFor(key: string, signal: AbortSignal): Promise<StoredRecord | undefined> {
    if (signal.aborted) return Promise.reject(signal.reason);
    const channel = this.channel(key);
    let group = this.groups.get(channel);
    if (!group) {
      const created: WaitGroup = {
        waiters: new Set(),
        ready: this.sub.subscribe(channel).catch(() => {}),
        poll: setInterval(() => this.check(channel, created), this.pollMs),
      };
      created.poll.unref();
      this.groups.set(channel, created);
      group = created;
      created.ready.then(() => this.check(channel, created));
    }
    const g = group;
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.leave(channel, g, waiter);
        reject(signal.reason);
      };
      const waiter = (record: StoredRecord | undefined) => {
        signal.removeEventListener("abort", onAbort);
        resolve(record);
      };
      g.waiters.add(waiter);
      signal.addEventListener("abort", onAbort, { once: true });
      // No read of its own: the group's read after subscribing, and every message since, covers
      // this waiter too, because any completion after the subscription is announced to the group.
    });
  }

  private check(channel: string, group: WaitGroup): void {
    const key = channel.slice(this.options.prefix.length + 1, channel.length - "}:done".length);
    this.get(key).then(
      (record) => {
        if (record?.state === RecordState.InFlight) return;
        for (const waiter of [...group.waiters]) {
          this.leave(channel, group, waiter);
          waiter(record);
        }
      },
      // The store is unreachable: keep waiting; the waiter's own deadline bounds it.
      () => {},
    );
  }

  private leave(channel: string, group: WaitGroup, waiter: (r: StoredRecord | undefined) => void): void {
    group.waiters.delete(waiter);
    if (group.waiters.size > 0 || this.groups.get(channel) !== group) return;
    clearInterval(group.poll);
    this.groups.delete(channel);
    this.sub.unsubscribe(channel).catch(() => {});
  }

  async close(): Promise<void> {
    for (const group of this.groups.values()) clearInterval(group.poll);
    this.groups.clear();
    await Promise.allSettled([this.redis.quit(), this.sub.quit()]);
    this.redis.disconnect();
    this.sub.disconnect();
  }
}

/** True when redlock failed because the lock is held, not because Redis could not be reached. */
async function isLockedError(err: unknown): Promise<boolean> {
  if (err instanceof ResourceLockedError) return true;
  if (!(err instanceof ExecutionError)) return false;
  if (err.message.includes("already-expired")) return true;
  for (const attempt of err.attempts) {
    const stats = await attempt;
    for (const reason of stats.votesAgainst.values())
      if (!(reason instanceof ResourceLockedError)) return false;
  }
  return err.attempts.length > 0;
}

function decode(reply: Reply, lockKnown: boolean): StoredRecord | undefined {
  if (!Array.isArray(reply) || reply[0] === null || reply[0] === undefined) {
    // No record; a held lock means another attempt is between taking it and writing its record.
    if (lockKnown && Array.isArray(reply) && Number(reply[9]) === 1) {
      return { state: RecordState.InFlight, fingerprint: undefined, createdAt: 0, expiresAt: 0 };
    }
    return undefined;
  }
  const [state, fp, created, expires, status, headers, body, recon, attempts, locked] = reply;
  const base = {
    fingerprint: String(fp),
    createdAt: Number(String(created)),
    expiresAt: Number(String(expires)),
    ...(attempts ? { attempts: Number(String(attempts)) } : {}),
  };
  switch (String(state)) {
    case RecordState.Completed:
      return {
        ...base,
        state: RecordState.Completed,
        response: {
          status: Number(String(status)),
          headers: JSON.parse(String(headers)) as [string, string][],
          body: body ?? Buffer.alloc(0),
          ...(String(recon) === "1" ? { reconciled: true } : {}),
        },
      };
    case RecordState.InFlight:
      if (Number(locked) === 1) return { ...base, state: RecordState.InFlight };
      return { ...base, state: RecordState.Unknown };
    default:
      return { ...base, state: RecordState.Unknown };
  }
}
