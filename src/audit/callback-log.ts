import { appendFile, readFile, rename, stat, unlink } from "node:fs/promises";
import pg from "pg";
import type { Logger } from "pino";
import { migrate } from "./migrate.js";

/** One CallbackLog row: one request on a protected route, or one refused before a route was decided. */
export interface CallbackRow {
  id: string;
  /** Epoch ms. */
  at: number;
  route: string;
  /** The key fields by name: {"invoiceNumber": "4711", "transactionId": "T-1"}. */
  keyFields?: Record<string, unknown> | undefined;
  scope?: Record<string, unknown> | undefined;
  storeKey?: string | undefined;
  requestId: string;
  method: string;
  path: string;
  outcome: string;
  status: number;
  upstreamMs?: number | undefined;
  errorCode?: string | undefined;
  instance: string;
  payload?: string | undefined;
}

export interface CallbackFilter {
  route?: string | undefined;
  outcome?: string | undefined;
  storeKey?: string | undefined;
  /** Rows whose key fields hold these values (JSON containment). */
  fields?: Record<string, string> | undefined;
  /** Epoch ms, inclusive. */
  from?: number | undefined;
  to?: number | undefined;
  limit: number;
}

export interface CallbackLogOptions {
  url: string;
  spool: string;
  spoolMaxBytes: number;
  retentionMs: number;
  migrate: boolean;
  logger: Logger;
  /** How long a row may wait for its batch. */
  flushMs?: number;
  /** A batch this large is written at once. */
  maxBatch?: number;
  /** Rows on their way to the database at most; more go to the spool at once. */
  maxPending?: number;
  /** How often the spool is replayed while the database is unreachable. */
  retryMs?: number;
  /** Told of rows lost because the spool was full. */
  onLost?: (rows: number) => void;
}

const COLUMNS = [
  ["id", "uuid"],
  ["at", "timestamptz"],
  ["route", "text"],
  ["key_fields", "jsonb"],
  ["scope", "jsonb"],
  ["store_key", "text"],
  ["request_id", "text"],
  ["method", "text"],
  ["path", "text"],
  ["outcome", "text"],
  ["status", "smallint"],
  ["upstream_ms", "real"],
  ["error_code", "text"],
  ["instance", "text"],
  ["payload", "text"],
] as const;

/** One INSERT for a whole batch, one array per column; a row already there (a replay) is skipped. */
const INSERT = `INSERT INTO callback_log (${COLUMNS.map(([c]) => c).join(", ")})
  SELECT * FROM unnest(${COLUMNS.map(([, t], i) => `$${i + 1}::${t}[]`).join(", ")})
  ON CONFLICT (id) DO NOTHING`;

function columnsOf(rows: readonly CallbackRow[]): unknown[][] {
  const json = (v: unknown) => (v === undefined ? null : JSON.stringify(v));
  return [
    rows.map((r) => r.id),
    rows.map((r) => new Date(r.at).toISOString()),
    rows.map((r) => r.route),
    rows.map((r) => json(r.keyFields)),
    rows.map((r) => json(r.scope)),
    rows.map((r) => r.storeKey ?? null),
    rows.map((r) => r.requestId),
    rows.map((r) => r.method),
    rows.map((r) => r.path),
    rows.map((r) => r.outcome),
    rows.map((r) => r.status),
    rows.map((r) => r.upstreamMs ?? null),
    rows.map((r) => r.errorCode ?? null),
    rows.map((r) => r.instance),
    rows.map((r) => r.payload ?? null),
  ];
}

/**
 * The CallbackLog in PostgreSQL. Rows are written off the request path in batches (one INSERT of
 * unnest()ed arrays each). While the database is unreachable, batches are appended to a spool file
 * (JSON lines), replayed once it is back, as log shippers do; rows beyond the spool's bound are
 * counted as lost and reported, never dropped in silence. On close, everything buffered is written,
 * to the database or to the spool.
 */
export class PostgresCallbackLog {
  private readonly pool: pg.Pool;
  private queue: CallbackRow[] = [];
  private timer: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();
  private pending = 0;
  private spooled = 0;
  private lostRows = 0;
  private unreachable: string | undefined;
  private migrated = false;
  private replaying: Promise<void> | undefined;
  private retry: NodeJS.Timeout | undefined;
  private prune: NodeJS.Timeout | undefined;
  private readonly replayFile: string;

  private constructor(private readonly options: CallbackLogOptions) {
    this.pool = new pg.Pool({
      connectionString: options.url,
      max: 4,
      connectionTimeoutMillis: 2_000,
      idleTimeoutMillis: 10_000,
    });
    // A connection dropped while idle (a database restart) is replaced at the next query.
    this.pool.on("error", () => {});
    this.replayFile = `${options.spool}.replaying`;
  }

  /** Opens the pool, migrates when asked, and replays a spool left by an earlier run. */
  static async open(options: CallbackLogOptions): Promise<PostgresCallbackLog> {
    const log = new PostgresCallbackLog(options);
    log.spooled = (await fileSize(options.spool)) + (await fileSize(log.replayFile));
    await log.replay();
    log.prune = setInterval(() => void log.pruneOld().catch(() => {}), 600_000);
    log.prune.unref();
    return log;
  }

  add(row: CallbackRow): void {
    this.queue.push(row);
    if (this.queue.length >= (this.options.maxBatch ?? 500)) void this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => void this.flush(), this.options.flushMs ?? 100);
      this.timer.unref();
    }
  }

  /** Writes what is queued; resolves once every batch so far is in the database or the spool. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.queue;
    this.queue = [];
    if (batch.length === 0) return this.chain;
    // Bounded memory: while the database is slow or away, rows go straight to the spool.
    const direct = this.unreachable !== undefined || this.pending > (this.options.maxPending ?? 10_000);
    this.pending += batch.length;
    this.chain = this.chain.then(async () => {
      try {
        if (direct) await this.toSpool(batch);
        else await this.insert(batch).catch((err: Error) => this.failed(err, batch));
      } finally {
        this.pending -= batch.length;
      }
    });
    return this.chain;
  }

  private async insert(rows: readonly CallbackRow[]): Promise<void> {
    if (!this.migrated) await this.ensureSchema();
    for (let i = 0; i < rows.length; i += 1_000) {
      await this.pool.query(INSERT, columnsOf(rows.slice(i, i + 1_000)));
    }
  }

  private async ensureSchema(): Promise<void> {
    if (this.options.migrate) {
      const applied = await migrate(this.pool);
      if (applied.length > 0) this.options.logger.info({ applied }, "CallbackLog migrations applied");
    }
    this.migrated = true;
  }

  private async failed(err: Error, batch: readonly CallbackRow[]): Promise<void> {
    if (this.unreachable === undefined) {
      this.options.logger.warn(
        { err: err.message },
        "CallbackLog database unreachable; spooling rows to disk",
      );
    }
    this.unreachable = err.message;
    await this.toSpool(batch);
  }

  private async toSpool(rows: readonly CallbackRow[]): Promise<void> {
    const text = rows.map((r) => `${JSON.stringify(r)}\n`).join("");
    const bytes = Buffer.byteLength(text);
    if (this.spooled + bytes > this.options.spoolMaxBytes) {
      this.lostRows += rows.length;
      this.options.onLost?.(rows.length);
      this.options.logger.error(
        { rows: rows.length, spool: this.options.spool },
        "CallbackLog spool full: rows lost",
      );
      return;
    }
    await appendFile(this.options.spool, text);
    this.spooled += bytes;
    this.scheduleReplay();
  }

  private scheduleReplay(): void {
    if (this.retry) return;
    this.retry = setTimeout(() => {
      this.retry = undefined;
      void this.replay();
    }, this.options.retryMs ?? 1_000);
    this.retry.unref();
  }

  /**
   * Moves the spool aside and inserts it in batches; on failure it stays aside for the next try.
   * Rows inserted before a failure are skipped when replayed again (their ids are known).
   */
  replay(): Promise<void> {
    this.replaying ??= (async () => {
      try {
        // Moved aside between two appends, never during one: appends run on the write chain.
        const moved = this.chain.then(async () => {
          if ((await fileSize(this.replayFile)) === 0 && (await fileSize(this.options.spool)) > 0) {
            await rename(this.options.spool, this.replayFile);
          }
        });
        this.chain = moved.catch(() => {});
        await moved;
        if ((await fileSize(this.replayFile)) > 0) {
          const rows = (await readFile(this.replayFile, "utf8"))
            .split("\n")
            .filter((line) => line.length > 0)
            .map((line) => JSON.parse(line) as CallbackRow);
          await this.insert(rows);
          await unlink(this.replayFile);
          this.options.logger.info({ rows: rows.length }, "CallbackLog spool replayed");
        } else if (!this.migrated) {
          await this.ensureSchema();
        }
        this.spooled = await fileSize(this.options.spool);
        this.unreachable = undefined;
        if (this.spooled > 0) this.scheduleReplay();
      } catch (err) {
        this.unreachable = (err as Error).message;
        this.scheduleReplay();
      } finally {
        this.replaying = undefined;
      }
    })();
    return this.replaying;
  }

  /** Deletes rows past the retention, 10,000 at a time, so that no statement holds locks for long. */
  async pruneOld(): Promise<number> {
    let deleted = 0;
    for (;;) {
      const result = await this.pool.query(
        "DELETE FROM callback_log WHERE id IN (SELECT id FROM callback_log WHERE at < now() - make_interval(secs => $1) LIMIT 10000)",
        [this.options.retentionMs / 1000],
      );
      deleted += result.rowCount ?? 0;
      if ((result.rowCount ?? 0) < 10_000) return deleted;
    }
  }

  /** Newest first. */
  async query(filter: CallbackFilter): Promise<CallbackRow[]> {
    const where: string[] = [];
    const values: unknown[] = [];
    const add = (sql: string, value: unknown) => {
      values.push(value);
      where.push(sql.replace("?", `$${values.length}`));
    };
    if (filter.route !== undefined) add("route = ?", filter.route);
    if (filter.outcome !== undefined) add("outcome = ?", filter.outcome);
    if (filter.storeKey !== undefined) add("store_key = ?", filter.storeKey);
    if (filter.fields !== undefined) add("key_fields @> ?::jsonb", JSON.stringify(filter.fields));
    if (filter.from !== undefined) add("at >= ?", new Date(filter.from).toISOString());
    if (filter.to !== undefined) add("at <= ?", new Date(filter.to).toISOString());
    values.push(filter.limit);
    const result = await this.pool.query<DbRow>(
      `SELECT * FROM callback_log ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY at DESC LIMIT $${values.length}`,
      values,
    );
    return result.rows.map((r) => ({
      id: r.id,
      at: r.at.getTime(),
      route: r.route,
      keyFields: r.key_fields ?? undefined,
      scope: r.scope ?? undefined,
      storeKey: r.store_key ?? undefined,
      requestId: r.request_id,
      method: r.method,
      path: r.path,
      outcome: r.outcome,
      status: r.status,
      upstreamMs: r.upstream_ms ?? undefined,
      errorCode: r.error_code ?? undefined,
      instance: r.instance,
      payload: r.payload ?? undefined,
    }));
  }

  /** Degraded while rows wait in the spool or were lost. */
  health(): { degraded: boolean; spooledBytes: number; lostRows: number; unreachable?: string } {
    return {
      degraded: this.spooled > 0 || this.lostRows > 0 || this.unreachable !== undefined,
      spooledBytes: this.spooled,
      lostRows: this.lostRows,
      ...(this.unreachable !== undefined ? { unreachable: this.unreachable } : {}),
    };
  }

  /** Writes what is queued (to the database, or to the spool), then closes the pool. */
  async close(): Promise<void> {
    clearInterval(this.prune);
    clearTimeout(this.retry);
    this.retry = undefined;
    await this.flush();
    await this.replaying;
    await this.pool.end();
  }
}

/** A callback_log row as node-postgres returns it (timestamptz as Date, jsonb parsed). */
interface DbRow {
  id: string;
  at: Date;
  route: string;
  key_fields: Record<string, unknown> | null;
  scope: Record<string, unknown> | null;
  store_key: string | null;
  request_id: string;
  method: string;
  path: string;
  outcome: string;
  status: number;
  upstream_ms: number | null;
  error_code: string | null;
  instance: string;
  payload: string | null;
}

async function fileSize(path: string): Promise<number> {
  return stat(path).then(
    (s) => s.size,
    () => 0,
  );
}
