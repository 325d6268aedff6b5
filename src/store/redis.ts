import { Redis } from "ioredis";
import { StoreUnavailableError } from "../errors.js";
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
}

const FIELDS = "'state', 'fp', 'created', 'expires', 'status', 'headers', 'body', 'recon', 'attempts'";

/**
 * Shared by every script. KEYS[1] is the record (a hash), KEYS[2] the lease (a string holding the
 * owning attempt's token, expiring with the lease), KEYS[3] the settle marker (present while a request
 * sent under this key may still commit on the backend). One hash tag puts all three in one slot.
 * Times come from the server's TIME: one clock for every gateway, and no gateway's clock step can
 * expire or revive a lease.
 */
const PRELUDE = `
    local function now()
      local t = redis.call('TIME')
      return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    -- What the key holds at time t: 'free', 'expired' (unknown past its TTL: free, but reported),
    -- 'released', 'unknown' (marked so, or in flight with no lease left), 'in_flight' or 'completed'.
    local function classify(t)
      local f = redis.call('HMGET', KEYS[1], 'state', 'expires')
      local state = f[1]
      if not state then return 'free' end
      local unknown = state == 'unknown' or (state == 'in_flight' and redis.call('EXISTS', KEYS[2]) == 0)
      if (tonumber(f[2]) or 0) <= t then
        if unknown then return 'expired' end
        return 'free'
      end
      if unknown then return 'unknown' end
      return state
    end
    local function record(view, t)
      local r = redis.call('HMGET', KEYS[1], ${FIELDS})
      r[10] = view
      r[11] = math.max(0, redis.call('PTTL', KEYS[3]))
      r[12] = t
      return r
    end
    -- Fencing, at the head of every script that ends an attempt: only the attempt whose token
    -- (ARGV[1]) the in-flight record carries may write. One that is fenced out gives back a lease it
    -- still holds (the record vanished under it) and wakes waiters, so that nothing is left hanging.
    local function owned()
      local cur = redis.call('HMGET', KEYS[1], 'token', 'state', 'expires')
      -- A record past its TTL counts for no one, not even the attempt that wrote it.
      if cur[1] == ARGV[1] and cur[2] == 'in_flight' and (tonumber(cur[3]) or 0) > now() then return true end
      if redis.call('GET', KEYS[2]) == ARGV[1] then
        redis.call('DEL', KEYS[2])
        redis.call('PUBLISH', ARGV[2], 'fenced')
      end
      return false
    end
    local function dropLease()
      if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
    end
    -- An extension only ever lengthens the settle marker: no attempt may shorten another's settle time.
    local function settleFor(ms)
      if ms > 0 and redis.call('PTTL', KEYS[3]) < ms then redis.call('SET', KEYS[3], '1', 'PX', ms) end
    end`;

/**
 * One Lua script per atomic step (ioredis defineCommand sends EVALSHA). Records that must be reported
 * when they expire (in flight, unknown) are kept a TTL longer than they count ('expires' is the
 * logical end, PEXPIRE the physical one); completed and released ones go when they end.
 */
const SCRIPTS = {
  idemGet: `${PRELUDE}
    local t = now()
    local view = classify(t)
    if view == 'free' or view == 'expired' then return {view} end
    return record(view, t)`,
  // The lease and the in-flight mark in one step, and all a replay costs. ARGV: token, fingerprint,
  // leaseMs, ttlMs, settleMs, takeOverUnknown. Returns {took, settlesInMs}, or the record that is there.
  idemBegin: `${PRELUDE}
    local t = now()
    local view = classify(t)
    local took, settles = 'fresh', 0
    if view == 'expired' then
      took = 'expired'
    elseif view == 'unknown' and ARGV[6] == '1' and redis.call('HGET', KEYS[1], 'fp') == ARGV[2] then
      took, settles = 'unknown', math.max(0, redis.call('PTTL', KEYS[3]))
    elseif view ~= 'free' and view ~= 'released' then
      return record(view, t)
    end
    local lease, ttl, settle = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
    local attempts = redis.call('HGET', KEYS[1], 'attempts')
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[1], 'state', 'in_flight', 'token', ARGV[1], 'fp', ARGV[2], 'created', t,
      'expires', t + lease + ttl, 'took', took)
    if attempts then redis.call('HSET', KEYS[1], 'attempts', attempts) end
    redis.call('PEXPIRE', KEYS[1], lease + 2 * ttl)
    redis.call('SET', KEYS[2], ARGV[1], 'PX', lease)
    -- A take-over has sent nothing yet: the earlier request's settle time stands as it was.
    if took ~= 'unknown' then
      redis.call('DEL', KEYS[3])
      if settle > 0 then redis.call('SET', KEYS[3], '1', 'PX', lease + settle) end
    end
    return {took, settles}`,
  // ARGV: token, leaseMs, ttlMs, settleMs. A lease that ran out is not revived.
  idemExtend: `${PRELUDE}
    if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
    local cur = redis.call('HMGET', KEYS[1], 'token', 'state')
    if cur[1] ~= ARGV[1] or cur[2] ~= 'in_flight' then return 0 end
    local t = now()
    local lease, ttl, settle = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
    redis.call('PEXPIRE', KEYS[2], lease)
    redis.call('HSET', KEYS[1], 'expires', t + lease + ttl)
    redis.call('PEXPIRE', KEYS[1], lease + 2 * ttl)
    if settle > 0 then settleFor(lease + settle) end
    return 1`,
  // ARGV: token, channel, status, headers, body, ttlMs, reconciled.
  idemComplete: `${PRELUDE}
    if not owned() then return 0 end
    local ttl = tonumber(ARGV[6])
    redis.call('HSET', KEYS[1], 'state', 'completed', 'status', ARGV[3], 'headers', ARGV[4], 'body', ARGV[5],
      'expires', now() + ttl, 'recon', ARGV[7])
    redis.call('PEXPIRE', KEYS[1], ttl)
    dropLease()
    redis.call('DEL', KEYS[3])
    redis.call('PUBLISH', ARGV[2], 'completed')
    return 1`,
  // ARGV: token, channel, ttlMs, settleMs (0: nothing was sent).
  idemUnknown: `${PRELUDE}
    if not owned() then return 0 end
    local ttl = tonumber(ARGV[3])
    redis.call('HSET', KEYS[1], 'state', 'unknown', 'expires', now() + ttl)
    redis.call('PEXPIRE', KEYS[1], 2 * ttl)
    dropLease()
    -- Now it is known when the attempt stopped waiting: that, not the lease's end, starts the settle time.
    -- (A later mark always ends later than any earlier one, so this never shortens another's.)
    local settle = tonumber(ARGV[4])
    if settle > 0 then redis.call('SET', KEYS[3], '1', 'PX', settle) end
    redis.call('PUBLISH', ARGV[2], 'unknown')
    return 1`,
  // ARGV: token, channel, 'hold' | 'drop', status, headers, body, holdMs. Without an answer to hold,
  // nothing was sent: a key taken over from 'unknown' goes back to it (the earlier request's outcome
  // is as unknown as before, settle time and all); any other key is freed.
  idemRelease: `${PRELUDE}
    if not owned() then return 0 end
    dropLease()
    if ARGV[3] ~= 'hold' and redis.call('HGET', KEYS[1], 'took') == 'unknown' then
      redis.call('HSET', KEYS[1], 'state', 'unknown', 'token', '')
      redis.call('PUBLISH', ARGV[2], 'unknown')
      return 1
    end
    redis.call('DEL', KEYS[3])
    if ARGV[3] == 'hold' then
      local hold = tonumber(ARGV[7])
      redis.call('HSET', KEYS[1], 'state', 'released', 'status', ARGV[4], 'headers', ARGV[5], 'body', ARGV[6],
        'expires', now() + hold, 'recon', '0')
      redis.call('PEXPIRE', KEYS[1], hold)
    else
      redis.call('DEL', KEYS[1])
    end
    redis.call('PUBLISH', ARGV[2], 'released')
    return 1`,
  // Operator resolution of an unknown key. ARGV: 'store' | 'release', channel, status, headers, body, ttlMs.
  idemResolve: `${PRELUDE}
    local t = now()
    if classify(t) ~= 'unknown' then return 0 end
    if ARGV[1] == 'store' then
      local ttl = tonumber(ARGV[6])
      redis.call('HSET', KEYS[1], 'state', 'completed', 'token', '', 'status', ARGV[3], 'headers', ARGV[4],
        'body', ARGV[5], 'expires', t + ttl, 'recon', '0')
      redis.call('PEXPIRE', KEYS[1], ttl)
    else
      redis.call('DEL', KEYS[1])
    end
    redis.call('DEL', KEYS[2], KEYS[3])
    redis.call('PUBLISH', ARGV[2], 'resolved')
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
  // ARGV: channel.
  idemPurge: `
    local n = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
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
 * The shared store: records in Redis hashes (bodies as raw bytes), the per-key lease a key that
 * expires on the server, completion announced on a pub/sub channel per key. Key names hold only the
 * engine's hash of the key material, never a client string.
 *
 * A first attempt costs two round trips (begin, which also answers the read; and the write that
 * ends it), a replay one. Extensions run beside the upstream call.
 */
export class RedisStore implements IdempotencyStore {
  readonly kind = "redis";
  private readonly redis: Redis & ScriptCommands;
  private readonly sub: Redis;
  private readonly groups = new Map<string, WaitGroup>();
  private readonly pollMs: number;

  constructor(private readonly options: RedisStoreOptions) {
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
      this.redis.defineCommand(name, name === "idemAttempts" ? { lua } : { numberOfKeys: 3, lua });
    }
    this.sub.on("message", (channel: string) => {
      const group = this.groups.get(channel);
      if (group) this.check(channel, group);
    });
    // Load the scripts once per connection so that every call is a single EVALSHA round trip.
    this.redis.on("ready", () => {
      for (const lua of Object.values(SCRIPTS)) this.redis.script("LOAD", lua).catch(() => {});
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

  /** Record, lease and settle marker of a key; the hash tag keeps them in one cluster slot. */
  private keys(key: string): [string, string, string] {
    const tag = `${this.options.prefix}{${key}}`;
    return [`${tag}:r`, `${tag}:l`, `${tag}:s`];
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
    const reply = await this.call("read", () => this.redis.idemGetBuffer(...this.keys(key)));
    return decode(reply);
  }

  async begin(key: string, lease: Lease): Promise<BeginResult> {
    const reply = await this.call("begin", () =>
      this.redis.idemBeginBuffer(
        ...this.keys(key),
        lease.token,
        lease.fingerprint,
        lease.leaseMs,
        lease.ttlMs,
        lease.settleMs,
        lease.takeOverUnknown ? "1" : "0",
      ),
    );
    if (Array.isArray(reply) && reply.length === 2) {
      const took = String(reply[0]) as "fresh" | "unknown" | "expired";
      return { acquired: true, took, settlesInMs: Number(reply[1]) };
    }
    const record = decode(reply);
    if (!record) throw new StoreUnavailableError("begin: unexpected reply");
    return { acquired: false, record };
  }

  async extend(key: string, token: string, times: LeaseTimes): Promise<boolean> {
    const reply = await this.call("extend", () =>
      this.redis.idemExtendBuffer(...this.keys(key), token, times.leaseMs, times.ttlMs, times.settleMs),
    );
    return reply === 1;
  }

  async complete(key: string, token: string, response: StoredResponse, ttlMs: number): Promise<boolean> {
    const reply = await this.call("complete", () =>
      this.redis.idemCompleteBuffer(
        ...this.keys(key),
        token,
        this.channel(key),
        response.status,
        JSON.stringify(response.headers),
        bytes(response.body),
        ttlMs,
        response.reconciled ? "1" : "0",
      ),
    );
    return reply === 1;
  }

  async markUnknown(key: string, token: string, times: LeaseTimes): Promise<boolean> {
    const reply = await this.call("mark unknown", () =>
      this.redis.idemUnknownBuffer(...this.keys(key), token, this.channel(key), times.ttlMs, times.settleMs),
    );
    return reply === 1;
  }

  async release(key: string, token: string, response?: StoredResponse, holdMs = 0): Promise<boolean> {
    const hold = response !== undefined && holdMs > 0;
    const reply = await this.call("release", () =>
      this.redis.idemReleaseBuffer(
        ...this.keys(key),
        token,
        this.channel(key),
        hold ? "hold" : "drop",
        response?.status ?? 0,
        JSON.stringify(response?.headers ?? []),
        response ? bytes(response.body) : "",
        holdMs,
      ),
    );
    return reply === 1;
  }

  async resolveUnknown(key: string, response: StoredResponse | null, ttlMs: number): Promise<boolean> {
    const reply = await this.call("resolve", () =>
      this.redis.idemResolveBuffer(
        ...this.keys(key),
        response ? "store" : "release",
        this.channel(key),
        response?.status ?? 0,
        JSON.stringify(response?.headers ?? []),
        response ? bytes(response.body) : "",
        ttlMs,
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
    const keys = entries.map((e) => (e.storeKey === undefined ? stream : this.keys(e.storeKey)[0]));
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
      this.redis.idemPurgeBuffer(...this.keys(key), this.channel(key)),
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

function bytes(body: Uint8Array): Buffer {
  return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
}

/**
 * A script's view of a record: HMGET's nine fields, then the view the script decided on, the settle
 * marker's remaining ms and the server's time. A one-element reply is a key that is free.
 */
function decode(reply: Reply): StoredRecord | undefined {
  if (!Array.isArray(reply) || reply.length < 12) return undefined;
  const [, fp, created, expires, status, headers, body, recon, attempts, view, settle, serverNow] = reply;
  const base = {
    fingerprint: String(fp),
    createdAt: Number(String(created)),
    // The server's clock, shown on this process's wall clock.
    expiresAt: Date.now() + (Number(String(expires)) - Number(String(serverNow))),
    ...(attempts ? { attempts: Number(String(attempts)) } : {}),
  };
  const response = (): StoredResponse => ({
    status: Number(String(status)),
    headers: JSON.parse(String(headers)) as [string, string][],
    body: body ?? Buffer.alloc(0),
    ...(String(recon) === "1" ? { reconciled: true } : {}),
  });
  switch (String(view)) {
    case RecordState.Completed:
      return { ...base, state: RecordState.Completed, response: response() };
    case RecordState.Released:
      return {
        ...base,
        state: RecordState.Released,
        response: Number(String(status)) > 0 ? response() : undefined,
      };
    case RecordState.InFlight:
      return { ...base, state: RecordState.InFlight };
    default:
      return { ...base, state: RecordState.Unknown, settlesInMs: Number(settle) };
  }
}
