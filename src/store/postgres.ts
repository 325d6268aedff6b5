import pg from "pg";
import { migrate } from "../audit/migrate.js";
import { StoreFullError, StoreRefusedError, StoreUnavailableError } from "../errors.js";
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

export interface PostgresStoreOptions {
  url: string;
  /** Apply the shipped migrations at connect (under an advisory lock). */
  migrate?: boolean;
  /** How often a waiting duplicate re-reads the record in case a notification was missed. */
  pollMs?: number;
  /** About how many attempt-log entries the table keeps. */
  attemptCapacity?: number;
  /** How often rows past their end are deleted. */
  sweepMs?: number;
  /** Connections in the pool. */
  connections?: number;
}

/** A step's answer: the idem_reply composite of migrations/postgres/002_store.sql. */
interface Reply {
  view: string | null;
  ok: number | null;
  took: string | null;
  settles: string | null;
  fp: string | null;
  created: string | null;
  expires: string | null;
  status: number | null;
  headers: string | null;
  body: Buffer | null;
  recon: boolean | null;
  attempts: number | null;
  settle_ms: string | null;
  server_now: string | null;
}

/** The answer of a step that ends, extends or purges: 1 when it did its work (purge: the rows gone). */
interface Done {
  ok: number | null;
}

/** SQLSTATEs of a database that is not there (or not yet): an outage, which failMode: open may pass. */
const OUTAGE = /^(08|57P0[1-3]|53300|40001|40P01)/;
const CHANNEL = "idem_done";

/**
 * The store on PostgreSQL: a row per key, one plpgsql function per step (the Redis store's scripts,
 * ported), so that a first attempt costs two round trips and a replay one. Waiting duplicates are
 * woken by LISTEN/NOTIFY on one channel (the payload names the key), with a fallback poll; rows past
 * their end are swept periodically. Unlike a Redis without persistence, a restart of the database
 * loses no completed record.
 */
export class PostgresStore implements IdempotencyStore {
  readonly kind = "postgres";
  /** Queries sent: the store's round trips, for tests and the bench. */
  roundTrips = 0;
  private readonly pool: pg.Pool;
  private listener: pg.Client | undefined;
  private listening: Promise<void> | undefined;
  private readonly waiters: WaitGroups;
  private sweep: NodeJS.Timeout | undefined;
  private closed = false;
  private ready: Promise<boolean> | undefined;
  lastError: string | undefined;

  constructor(private readonly options: PostgresStoreOptions) {
    this.waiters = new WaitGroups({ read: (key) => this.get(key), pollMs: options.pollMs ?? 1_000 });
    this.pool = new pg.Pool({
      connectionString: options.url,
      max: options.connections ?? 16,
      connectionTimeoutMillis: 2_000,
      // A step that takes longer counts as an outage, as a Redis command past its timeout does.
      query_timeout: 2_000,
      idleTimeoutMillis: 30_000,
    });
    this.pool.on("error", (err) => {
      this.lastError = err.message;
    });
  }

  /**
   * Migrates (when asked) and starts listening. Resolves false when the database cannot be reached
   * within `timeoutMs` (the gateway starts anyway and answers 503 until then); it keeps trying in the
   * background, as the Redis client reconnects by itself.
   */
  connect(timeoutMs = 5_000): Promise<boolean> {
    this.ready ??= (async () => {
      for (;;) {
        try {
          if (this.options.migrate ?? true) await migrate(this.pool);
          await this.listen();
          break;
        } catch (err) {
          this.lastError = (err as Error).message;
          if (this.closed) return false;
          await new Promise((resolve) => setTimeout(resolve, 500).unref());
        }
      }
      this.sweep = setInterval(() => void this.sweepOld().catch(() => {}), this.options.sweepMs ?? 60_000);
      this.sweep.unref();
      return true;
    })();
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    return Promise.race([this.ready, late]).finally(() => clearTimeout(timer));
  }

  /** One connection of its own LISTENs; it is made again after it drops, and the waiters re-read. */
  private listen(): Promise<void> {
    this.listening ??= (async () => {
      const client = new pg.Client({ connectionString: this.options.url, connectionTimeoutMillis: 2_000 });
      client.on("notification", (msg) => {
        if (msg.payload !== undefined) this.waiters.wake(msg.payload);
      });
      client.on("error", () => {
        this.listener = undefined;
        this.listening = undefined;
        client.end().catch(() => {});
        if (!this.closed) {
          setTimeout(() => {
            this.listen().then(
              () => this.waiters.wakeAll(),
              () => {},
            );
          }, 500).unref();
        }
      });
      try {
        await client.connect();
        await client.query(`LISTEN ${CHANNEL}`);
      } catch (err) {
        this.listening = undefined;
        client.end().catch(() => {});
        throw err;
      }
      this.listener = client;
    })();
    return this.listening;
  }

  /**
   * One step: a named statement, so that each connection parses and plans it once. A step that only
   * says whether it did its work answers `ok` alone; a reply's every column is a field that the
   * client parses on every call.
   */
  private async step<R = Reply>(what: string, sql: string, values: unknown[]): Promise<R> {
    this.roundTrips++;
    try {
      const result = await this.pool.query<R & pg.QueryResultRow>({ name: what, text: sql, values });
      return result.rows[0] as R;
    } catch (err) {
      const message = `${what}: ${(err as Error).message}`;
      // No answer from the database (a refused or dropped connection, a timeout) is an outage.
      if (!(err instanceof pg.DatabaseError)) throw new StoreUnavailableError(message, { cause: err });
      const code = err.code ?? "";
      if (code === "53100")
        throw new StoreFullError("the database is out of disk space; retry later", { cause: err });
      if (OUTAGE.test(code)) throw new StoreUnavailableError(message, { cause: err });
      throw new StoreRefusedError(message, { cause: err });
    }
  }

  async get(key: string): Promise<StoredRecord | undefined> {
    return decode(await this.step("read", "SELECT * FROM idem_get($1)", [key]));
  }

  async begin(key: string, lease: Lease): Promise<BeginResult> {
    const reply = await this.step("begin", "SELECT * FROM idem_begin($1, $2, $3, $4, $5, $6, $7)", [
      key,
      lease.token,
      lease.fingerprint,
      lease.leaseMs,
      lease.ttlMs,
      lease.settleMs,
      lease.takeOverUnknown,
    ]);
    if (reply.view === "acquired") {
      return {
        acquired: true,
        took: reply.took as "fresh" | "unknown" | "expired",
        settlesInMs: Number(reply.settles ?? 0),
      };
    }
    const record = decode(reply);
    if (!record) throw new StoreUnavailableError("begin: unexpected reply");
    return { acquired: false, record };
  }

  async extend(key: string, token: string, times: LeaseTimes): Promise<boolean> {
    const reply = await this.step<Done>("extend", "SELECT ok FROM idem_extend($1, $2, $3, $4, $5)", [
      key,
      token,
      times.leaseMs,
      times.ttlMs,
      times.settleMs,
    ]);
    return reply.ok === 1;
  }

  async complete(key: string, token: string, response: StoredResponse, ttlMs: number): Promise<boolean> {
    const reply = await this.step<Done>(
      "complete",
      "SELECT ok FROM idem_complete($1, $2, $3, $4, $5, $6, $7)",
      [
        key,
        token,
        response.status,
        JSON.stringify(response.headers),
        bytes(response.body),
        ttlMs,
        response.reconciled === true,
      ],
    );
    return reply.ok === 1;
  }

  async markUnknown(key: string, token: string, times: LeaseTimes): Promise<boolean> {
    const reply = await this.step<Done>("mark unknown", "SELECT ok FROM idem_unknown($1, $2, $3, $4)", [
      key,
      token,
      times.ttlMs,
      times.settleMs,
    ]);
    return reply.ok === 1;
  }

  async release(key: string, token: string, response?: StoredResponse, holdMs = 0): Promise<boolean> {
    const hold = response !== undefined && holdMs > 0;
    const reply = await this.step<Done>(
      "release",
      "SELECT ok FROM idem_release($1, $2, $3, $4, $5, $6, $7)",
      [
        key,
        token,
        hold,
        response?.status ?? 0,
        JSON.stringify(response?.headers ?? []),
        response ? bytes(response.body) : Buffer.alloc(0),
        holdMs,
      ],
    );
    return reply.ok === 1;
  }

  async resolveUnknown(key: string, response: StoredResponse | null, ttlMs: number): Promise<boolean> {
    const reply = await this.step<Done>("resolve", "SELECT ok FROM idem_resolve($1, $2, $3, $4, $5, $6)", [
      key,
      response !== null,
      response?.status ?? 0,
      JSON.stringify(response?.headers ?? []),
      response ? bytes(response.body) : Buffer.alloc(0),
      ttlMs,
    ]);
    return reply.ok === 1;
  }

  async purge(key: string): Promise<boolean> {
    const reply = await this.step<Done>("purge", "SELECT ok FROM idem_purge($1)", [key]);
    return (reply.ok ?? 0) > 0;
  }

  async appendAttempts(entries: readonly AttemptEntry[]): Promise<void> {
    const cap = this.options.attemptCapacity ?? 10_000;
    if (entries.length === 0 || cap === 0) return;
    const keys = entries.flatMap((e) => (e.storeKey === undefined ? [] : [e.storeKey]));
    this.roundTrips++;
    try {
      // One statement: the entries, the counts on existing records, and the cap.
      await this.pool.query(
        `WITH added AS (INSERT INTO idempotency_attempts (entry) SELECT unnest($1::jsonb[]) RETURNING id),
              counted AS (
                UPDATE idempotency_records r SET attempts = coalesce(r.attempts, 0) + c.n
                FROM (SELECT k, count(*) AS n FROM unnest($2::text[]) AS k GROUP BY k) c
                WHERE r.key = c.k AND r.purge_at > idem_now() AND r.state <> 'free'
                RETURNING 1)
         DELETE FROM idempotency_attempts WHERE id <= (SELECT max(id) FROM added) - $3`,
        [entries.map((e) => JSON.stringify(e)), keys, cap],
      );
    } catch (err) {
      throw new StoreUnavailableError(`attempt log: ${(err as Error).message}`, { cause: err });
    }
  }

  async recentAttempts(filter: AttemptFilter): Promise<AttemptEntry[]> {
    const where: string[] = [];
    const values: unknown[] = [];
    for (const [field, value] of [
      ["route", filter.route],
      ["outcome", filter.outcome],
      ["storeKey", filter.storeKey],
    ] as const) {
      if (value === undefined) continue;
      values.push(value);
      where.push(`entry->>'${field}' = $${values.length}`);
    }
    values.push(filter.limit);
    this.roundTrips++;
    try {
      const result = await this.pool.query<{ entry: AttemptEntry }>(
        `SELECT entry FROM idempotency_attempts ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
         ORDER BY id DESC LIMIT $${values.length}`,
        values,
      );
      return result.rows.map((r) => r.entry);
    } catch (err) {
      throw new StoreUnavailableError(`attempt log: ${(err as Error).message}`, { cause: err });
    }
  }

  async ping(): Promise<void> {
    this.roundTrips++;
    try {
      await this.pool.query("SELECT 1");
    } catch (err) {
      throw new StoreUnavailableError(`ping: ${(err as Error).message}`, { cause: err });
    }
  }

  /** A standby in recovery takes no writes: every protected request would be refused. */
  async health(): Promise<StoreHealth> {
    const { rows } = await this.pool.query<{ standby: boolean }>("SELECT pg_is_in_recovery() AS standby");
    return {
      problems: rows[0]?.standby
        ? ["postgres: the database is a read-only standby; point store.postgres.url at the primary"]
        : [],
      warnings: [],
    };
  }

  /** Deletes rows past their end, 10,000 at a time. */
  async sweepOld(): Promise<number> {
    let deleted = 0;
    for (;;) {
      const result = await this.pool.query(
        "DELETE FROM idempotency_records WHERE key IN (SELECT key FROM idempotency_records WHERE purge_at <= idem_now() LIMIT 10000)",
      );
      deleted += result.rowCount ?? 0;
      if ((result.rowCount ?? 0) < 10_000) return deleted;
    }
  }

  /**
   * Waiters of one key share a fallback poll (WaitGroups); the listening connection, up before any
   * waiter is added (connect), hears every completion.
   */
  waitFor(key: string, signal: WaitSignal): Promise<StoredRecord | undefined> {
    return this.waiters.wait(key, signal);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweep);
    this.waiters.clear();
    await this.listener?.end().catch(() => {});
    await this.pool.end().catch(() => {});
  }
}

function bytes(body: Uint8Array): Buffer {
  return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
}

/** A step's view of a record; 'free' and 'expired' are no record. */
function decode(reply: Reply): StoredRecord | undefined {
  const view = reply.view;
  if (view === null || view === "free" || view === "expired" || view === "acquired") return undefined;
  return storedRecord({
    view,
    fingerprint: String(reply.fp),
    createdAt: Number(reply.created),
    expires: Number(reply.expires),
    serverNow: Number(reply.server_now),
    attempts: reply.attempts ?? undefined,
    status: Number(reply.status),
    headers: reply.headers,
    body: reply.body,
    reconciled: reply.recon === true,
    settleMs: Number(reply.settle_ms),
  });
}
