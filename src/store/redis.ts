import { createHash } from "node:crypto";
import calculateSlot from "cluster-key-slot";
import type { Cluster, Redis } from "ioredis";
import { StoreFullError, StoreRefusedError, StoreUnavailableError } from "../errors.js";
import { WriteBatch } from "./redis-batch.js";
import { type CheckWanted, inspectPrimary } from "./redis-checks.js";
import { connectRedis, type RedisClient, type RedisSettings, type Topology } from "./redis-connection.js";
import { storeScripts } from "./redis-scripts.js";
import { storedRecord } from "./server-record.js";
import type {
  AttemptEntry,
  AttemptFilter,
  BeginResult,
  IdempotencyStore,
  Lease,
  LeaseTimes,
  StoredRecord,
  StoredResponse,
  StoreHealth,
  WaitSignal,
} from "./types.js";
import { WaitGroups } from "./wait-groups.js";

export interface RedisStoreOptions extends Partial<RedisSettings> {
  prefix: string;
  /** How often a waiting duplicate re-reads the record in case a completion message was missed. */
  pollMs?: number;
  /** About how many attempt-log entries the stream keeps (XADD MAXLEN ~). */
  attemptCapacity?: number;
  /** Longest time one store command may take before the store counts as unavailable. */
  commandTimeoutMs?: number;
  /** A begin or an answer that did not reach store.redis.replicas replicas in time. */
  onShortfall?: (step: "begin" | "complete") => void;
}

type Scripts = ReturnType<typeof storeScripts>;
type ScriptName = keyof Scripts;
type Reply = (Buffer | null)[] | number | null;
/** EVALSHA and EVAL with replies as Buffers (bodies are raw bytes); ioredis makes them, its types do not name them. */
type Client = RedisClient & {
  evalshaBuffer(sha: string, numberOfKeys: number, ...args: (string | Buffer | number)[]): Promise<Reply>;
  evalBuffer(lua: string, numberOfKeys: number, ...args: (string | Buffer | number)[]): Promise<Reply>;
};

/** The attempt log on a cluster: this many streams, on as many hash tags, instead of one hot key. */
const ATTEMPT_SHARDS = 8;
/** How long a refused write keeps /readyz red unless a later write succeeds. */
const REFUSAL_SHOWN_MS = 30_000;

/**
 * Redis replies that mean the store is not there (or not yet, or moving): an outage, which
 * failMode: open may forward past. Every other error reply is the server refusing.
 */
const OUTAGE_REPLY = /^(CLUSTERDOWN|LOADING|TRYAGAIN|MASTERDOWN|BUSY|MOVED|ASK)\b/;

/**
 * The shared store: records in Redis hashes (bodies as raw bytes), the per-key lease a key that
 * expires on the server, completion announced on a pub/sub channel per key (sharded on a cluster).
 * Key names hold only the engine's hash of the key material, never a client string.
 *
 * A first attempt costs two round trips (begin, which also answers the read; and the write that
 * ends it), a replay one. With store.redis.replicas, a begin that took the key and a completion are
 * each followed by a WAIT, shared by the writes of that moment. Extensions run beside the upstream call.
 */
export class RedisStore implements IdempotencyStore {
  readonly kind = "redis";
  readonly topology: Topology;
  /** Where the store connects, without credentials. */
  readonly where: string;
  private readonly redis: Client;
  private readonly sub: RedisClient;
  private readonly waiters: WaitGroups;
  private readonly scripts: Scripts;
  private readonly shas: Record<ScriptName, string>;
  private readonly replicas: number;
  private readonly replicaTimeoutMs: number;
  private refusal: { message: string; at: number } | undefined;
  /** The last connection error, if any: why the store is not reachable. */
  lastError: string | undefined;
  private readonly barriers = new Map<Redis, { pending?: Promise<number>; running?: Promise<unknown> }>();
  /** One primary's connection batches by corking; a cluster's client auto-pipelines per node. */
  private readonly batch: WriteBatch | undefined;

  constructor(private readonly options: RedisStoreOptions) {
    this.waiters = new WaitGroups({
      read: (key) => this.get(key),
      pollMs: options.pollMs ?? 1_000,
      open: (key) => this.subscribe(this.channel(key)),
      close: (key) => {
        this.unsubscribe(this.channel(key)).catch(() => {});
      },
    });
    this.replicas = options.replicas ?? 0;
    this.replicaTimeoutMs = options.replicaTimeout ?? 500;
    const settings: RedisSettings = {
      url: "redis://127.0.0.1:6379",
      ...options,
      replicas: this.replicas,
      replicaTimeout: this.replicaTimeoutMs,
    };
    const base = options.commandTimeoutMs ?? 2_000;
    const conns = connectRedis(settings, {
      // A command may queue behind a WAIT on its connection: give it that time on top.
      commandTimeoutMs: this.replicas > 0 ? base + this.replicaTimeoutMs : base,
      connectTimeoutMs: 2_000,
    });
    this.topology = conns.topology;
    this.where = conns.where;
    this.redis = conns.commands as Client;
    this.sub = conns.subscriber;
    this.batch = this.topology === "cluster" ? undefined : new WriteBatch(this.redis as Redis);
    // Reconnects are ioredis's; the last error is kept to say why the store cannot be reached.
    this.redis.on("error", (err: Error) => {
      this.lastError = err.message;
    });
    this.sub.on("error", () => {});
    this.scripts = storeScripts(this.topology === "cluster" ? "SPUBLISH" : "PUBLISH");
    const shas: Partial<Record<ScriptName, string>> = {};
    for (const [name, lua] of Object.entries(this.scripts)) {
      shas[name as ScriptName] = createHash("sha1").update(lua).digest("hex");
    }
    this.shas = shas as Record<ScriptName, string>;
    // The channel is `<prefix>{<key>}:done`.
    const onMessage = (channel: string | Buffer) => {
      const name = String(channel);
      this.waiters.wake(name.slice(this.options.prefix.length + 1, name.length - "}:done".length));
    };
    this.sub.on(this.topology === "cluster" ? "smessage" : "message", onMessage);
    // Load the scripts once per connection so that every call is a single EVALSHA round trip; a
    // server that lost them (a restart, a failover, a node not yet loaded) answers NOSCRIPT, and
    // `script` sends that call again as an EVAL, which loads it.
    this.redis.on("ready", () => {
      this.loadScripts().catch(() => {});
    });
  }

  private primaries(): Redis[] {
    return this.topology === "cluster" ? (this.redis as Cluster).nodes("master") : [this.redis as Redis];
  }

  private async loadScripts(): Promise<void> {
    await Promise.all(
      this.primaries().flatMap((node) => Object.values(this.scripts).map((lua) => node.script("LOAD", lua))),
    );
  }

  /**
   * Resolves once connected, or after `timeoutMs` (the gateway starts anyway and answers 503 until
   * then). With `untilError`, the first connection error ends the wait (check-config --connect).
   */
  async connect(timeoutMs = 5_000, untilError = false): Promise<boolean> {
    if (this.redis.status === "ready") return true;
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.redis.off("ready", onReady);
        this.redis.off("error", onError);
        resolve(ok);
      };
      const onReady = () => done(true);
      const onError = () => {
        if (untilError) done(false);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      this.redis.on("ready", onReady);
      this.redis.on("error", onError);
    });
  }

  /** A key's record (which holds its lease and settle time); the hash tag puts it in its channel's slot. */
  private record(key: string): string {
    return `${this.options.prefix}{${key}}:r`;
  }
  private channel(key: string): string {
    return `${this.options.prefix}{${key}}:done`;
  }

  /**
   * One store step. An error reply is sorted: an outage (no connection, timeout, a cluster between
   * owners) is StoreUnavailableError; a full server StoreFullError; any other refusal
   * StoreRefusedError, kept for /readyz.
   */
  private call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    this.batch?.join();
    let sent: Promise<T>;
    try {
      sent = fn();
    } catch (err) {
      return Promise.reject(this.sorted(what, err));
    }
    return sent.catch((err: unknown) => {
      throw this.sorted(what, err);
    });
  }

  /** The error a store step fails with, for what Redis answered (see `call`). */
  private sorted(what: string, err: unknown): Error {
    const message = err instanceof Error ? err.message : String(err);
    const isReply = err instanceof Error && err.name === "ReplyError";
    if (!isReply || OUTAGE_REPLY.test(message)) {
      return new StoreUnavailableError(`${what}: ${message}`, { cause: err });
    }
    this.refusal = { message: `${what}: ${message}`, at: Date.now() };
    if (message.startsWith("OOM")) {
      return new StoreFullError(`the Redis server is at maxmemory and refuses new keys (OOM); retry later`, {
        cause: err,
      });
    }
    const why = message.startsWith("READONLY")
      ? `${what}: the Redis server is a read-only replica (READONLY); point store.redis at the primary`
      : `${what}: ${message}`;
    return new StoreRefusedError(why, { cause: err });
  }

  /**
   * How many replicas hold every write this process made so far on the connection that holds `key`
   * (WAIT). Group commit: a WAIT covers every write whose reply came before it was sent, so callers
   * that arrive while one is queued share it, and a connection has one WAIT out at a time. Writes
   * behind a WAIT wait for it: with a replica down, for replicaTimeout.
   */
  private confirmed(key: string): Promise<number> {
    const node = this.nodeOf(key);
    let barrier = this.barriers.get(node);
    if (!barrier) {
      barrier = {};
      this.barriers.set(node, barrier);
    }
    const b = barrier;
    if (b.pending) return b.pending;
    // Sent once the WAIT before it has answered; until then, later callers join this one.
    const send = async (): Promise<number> => {
      await b.running;
      b.pending = undefined;
      const sent = node.wait(this.replicas, this.replicaTimeoutMs);
      b.running = sent.catch(() => {});
      return sent;
    };
    b.pending = send();
    return b.pending;
  }

  /** The connection to the primary that owns `key`: the only one, or on a cluster its slot's. */
  private nodeOf(key: string): Redis {
    if (this.topology !== "cluster") return this.redis as Redis;
    const cluster = this.redis as Cluster;
    const owner = cluster.slots[calculateSlot(this.record(key))]?.[0];
    const node = cluster.nodes("master").find((n) => `${n.options.host}:${n.options.port}` === owner);
    if (!node) throw new StoreUnavailableError("no primary serves the key's slot now");
    return node;
  }

  /**
   * EVALSHA of one of the scripts, as a plain command: ioredis's defineCommand wraps every call in
   * a second promise, a callback adapter and a closure. A server without the script (restarted,
   * failed over, a node not loaded yet) answers NOSCRIPT, having run nothing: the call goes again
   * as an EVAL, which loads the script as it runs it.
   */
  private script(name: ScriptName, keys: number, ...args: (string | Buffer | number)[]): Promise<Reply> {
    return this.redis.evalshaBuffer(this.shas[name], keys, ...args).catch((err: unknown) => {
      if (!(err instanceof Error) || !err.message.startsWith("NOSCRIPT")) throw err;
      return this.redis.evalBuffer(this.scripts[name], keys, ...args);
    });
  }

  /** One of the scripts that act on one key's record, the only key they are given. */
  private keyScript(name: ScriptName, key: string, ...args: (string | Buffer | number)[]): Promise<Reply> {
    return this.script(name, 1, this.record(key), ...args);
  }

  async get(key: string): Promise<StoredRecord | undefined> {
    const reply = await this.call("read", () => this.keyScript("idemGet", key));
    return decode(reply);
  }

  async begin(key: string, lease: Lease): Promise<BeginResult> {
    const reply = await this.call("begin", () =>
      this.keyScript(
        "idemBegin",
        key,
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
      if (this.replicas > 0) await this.beginReplicated(key, lease.token);
      return { acquired: true, took, settlesInMs: Number(reply[1]) };
    }
    const record = decode(reply);
    if (!record) throw new StoreUnavailableError("begin: unexpected reply");
    return { acquired: false, record };
  }

  /**
   * A failover before the replicas have the begin would lose it and let a retry in: unless they
   * confirm it, the key is given back and nothing is forwarded.
   */
  private async beginReplicated(key: string, token: string): Promise<void> {
    let acked = 0;
    try {
      acked = await this.call("begin (WAIT)", () => this.confirmed(key));
    } catch (err) {
      await this.release(key, token).catch(() => false);
      throw err;
    }
    if (acked >= this.replicas) return;
    this.options.onShortfall?.("begin");
    await this.release(key, token).catch(() => false);
    throw new StoreUnavailableError(
      `begin reached ${acked} of ${this.replicas} replica(s) within ${this.replicaTimeoutMs} ms (store.redis.replicas)`,
    );
  }

  async extend(key: string, token: string, times: LeaseTimes): Promise<boolean> {
    const reply = await this.call("extend", () =>
      this.keyScript("idemExtend", key, token, times.leaseMs, times.ttlMs, times.settleMs),
    );
    return reply === 1;
  }

  async complete(key: string, token: string, response: StoredResponse, ttlMs: number): Promise<boolean> {
    const reply = await this.call("complete", () =>
      this.keyScript(
        "idemComplete",
        key,
        token,
        this.channel(key),
        response.status,
        JSON.stringify(response.headers),
        bytes(response.body),
        ttlMs,
        response.reconciled ? "1" : "0",
      ),
    );
    if (reply !== 1) return false;
    this.refusal = undefined;
    if (this.replicas > 0) {
      // The answer was made upstream and is stored on the primary: the caller gets it either way.
      const acked = await this.confirmed(key).catch(() => 0);
      if (acked < this.replicas) this.options.onShortfall?.("complete");
    }
    return true;
  }

  async markUnknown(key: string, token: string, times: LeaseTimes): Promise<boolean> {
    const reply = await this.call("mark unknown", () =>
      this.keyScript("idemUnknown", key, token, this.channel(key), times.ttlMs, times.settleMs),
    );
    return reply === 1;
  }

  async release(key: string, token: string, response?: StoredResponse, holdMs = 0): Promise<boolean> {
    const hold = response !== undefined && holdMs > 0;
    const reply = await this.call("release", () =>
      this.keyScript(
        "idemRelease",
        key,
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
      this.keyScript(
        "idemResolve",
        key,
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

  /** The attempt log's streams: one per prefix, outside any key's hash tag; on a cluster, several. */
  private attemptStreams(): string[] {
    if (this.topology !== "cluster") return [`${this.options.prefix}attempts`];
    return Array.from({ length: ATTEMPT_SHARDS }, (_, i) => `${this.options.prefix}attempts{${i}}`);
  }
  private nextShard = 0;

  async appendAttempts(entries: readonly AttemptEntry[]): Promise<void> {
    const cap = this.options.attemptCapacity ?? 10_000;
    if (entries.length === 0 || cap === 0) return;
    const streams = this.attemptStreams();
    const lines = entries.map((e) => JSON.stringify(e));
    if (streams.length === 1) {
      const stream = streams[0] as string;
      const keys = entries.map((e) => (e.storeKey === undefined ? stream : this.record(e.storeKey)));
      await this.call("attempt log", () =>
        this.script("idemAttempts", 1 + keys.length, stream, ...keys, cap, ...lines),
      );
      return;
    }
    // A script runs in one slot: the batch goes to one stream (the next, in turn), each count to its record.
    const stream = streams[this.nextShard++ % streams.length] as string;
    const shardCap = Math.max(1, Math.ceil(cap / streams.length));
    await this.call("attempt log", () =>
      Promise.all([
        this.script("idemAttempts", 1, stream, shardCap, ...lines),
        ...entries.flatMap((e) =>
          e.storeKey === undefined ? [] : [this.keyScript("idemCount", e.storeKey)],
        ),
      ]),
    );
  }

  async recentAttempts(filter: AttemptFilter): Promise<AttemptEntry[]> {
    const cap = this.options.attemptCapacity ?? 10_000;
    const streams = this.attemptStreams();
    const count = Math.max(1, Math.min(Math.ceil(cap / streams.length), 100_000));
    const shards = await this.call("attempt log", () =>
      Promise.all(streams.map((stream) => this.redis.xrevrange(stream, "+", "-", "COUNT", count))),
    );
    const all = shards.flat().map(([, fields]) => JSON.parse(String(fields[1])) as AttemptEntry);
    if (streams.length > 1) all.sort((a, b) => b.time - a.time);
    const out: AttemptEntry[] = [];
    for (const entry of all) {
      if (out.length >= filter.limit) break;
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

  /**
   * What the primaries allow (persistence, eviction, memory, role, replicas), and a write refused in
   * the last moments that no write since has made good.
   */
  async health(): Promise<StoreHealth> {
    if (this.redis.status !== "ready") {
      return {
        problems: [`not connected to redis (${this.where}): ${this.lastError ?? "connecting"}`],
        warnings: [],
      };
    }
    const wanted: CheckWanted = { replicas: this.replicas, expectPrimary: this.topology !== "cluster" };
    const reports = await Promise.all(
      this.primaries().map((node) =>
        inspectPrimary(node, `${node.options.host}:${node.options.port}`, wanted),
      ),
    );
    const problems = reports.flatMap((r) => r.problems);
    const warnings = reports.flatMap((r) => r.warnings);
    const refusal = this.refusal;
    if (refusal && Date.now() - refusal.at < REFUSAL_SHOWN_MS) problems.push(`refused: ${refusal.message}`);
    return { problems, warnings };
  }

  async purge(key: string): Promise<boolean> {
    const reply = await this.call("purge", () => this.keyScript("idemPurge", key, this.channel(key)));
    return typeof reply === "number" && reply > 0;
  }

  /**
   * Waiters of one key share a subscription and a fallback poll (WaitGroups). The subscription is
   * made before the group's first read, so a completion between the two cannot be missed; the poll
   * covers a lost message and a lease that ran out without any message (a crashed gateway).
   */
  waitFor(key: string, signal: WaitSignal): Promise<StoredRecord | undefined> {
    return this.waiters.wait(key, signal);
  }

  // A cluster's messages stay in the shard that owns the key's slot.
  private subscribe(channel: string): Promise<unknown> {
    return this.topology === "cluster" ? this.sub.ssubscribe(channel) : this.sub.subscribe(channel);
  }
  private unsubscribe(channel: string): Promise<unknown> {
    return this.topology === "cluster" ? this.sub.sunsubscribe(channel) : this.sub.unsubscribe(channel);
  }

  async close(): Promise<void> {
    this.waiters.clear();
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
  return storedRecord({
    view: String(view),
    fingerprint: String(fp),
    createdAt: Number(String(created)),
    expires: Number(String(expires)),
    serverNow: Number(String(serverNow)),
    attempts: attempts ? Number(String(attempts)) : undefined,
    status: Number(String(status)),
    headers: headers === null ? null : String(headers),
    body: body ?? null,
    reconciled: String(recon) === "1",
    settleMs: Number(settle),
  });
}
