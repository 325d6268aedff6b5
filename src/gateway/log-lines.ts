import { writeSync } from "node:fs";
import type { Writable } from "node:stream";
import { type DestinationStream, type LogFn, type Logger, pino } from "pino";

/** Where gathered lines go: standard output in the gateway (see `StandardOutput`), a recorder in tests. */
export interface LineSink {
  write(chunk: string): unknown;
}

/** The largest write that a pipe never interleaves with another process's (PIPE_BUF on Linux). */
const PIPE_BUF = 4096;

export interface StandardOutputOptions {
  /** Where chunks go: the process's standard output by default. */
  stream?: Writable;
  /** At most this many bytes wait for the reader; chunks beyond are dropped, their lines counted. */
  maxBytes: number;
}

/**
 * Standard output that never holds up the gateway. Written synchronously (as pino writes by
 * default), a reader that stopped reading (a stalled log shipper, a full disk behind a pipe, a
 * blocking container log driver) stopped the event loop once the pipe was full, retrying the write:
 * every request waited on a log line. Here a chunk goes to Node's own stream for standard output,
 * which on a pipe writes at once when it can and otherwise waits for the pipe without blocking.
 * One chunk is out at a time and the others wait here, in order, at most `maxBytes` of them; what
 * does not fit is dropped and counted, as a proxy's access log should rather than stop proxying.
 * One chunk at a time also keeps every write to at most PIPE_BUF bytes of whole lines, so
 * `--workers` sharing a pipe never split each other's lines.
 */
export class StandardOutput implements LineSink {
  /** Lines dropped since the start. */
  dropped = 0;
  /** Dropped lines not reported yet (see `onCaughtUp`). */
  private unreported = 0;
  /** Chunks waiting for the one in flight, with their sizes in bytes. */
  private readonly queue: { chunk: string; bytes: number }[] = [];
  private queuedBytes = 0;
  private writing = false;
  private broken = false;
  private readonly stream: Writable;
  private readonly maxBytes: number;
  private waiters: (() => void)[] = [];
  /** Told, once the reader has taken everything, how many lines were dropped before. */
  onCaughtUp: ((droppedLines: number) => void) | undefined;

  constructor(options: StandardOutputOptions) {
    this.stream = options.stream ?? process.stdout;
    this.maxBytes = options.maxBytes;
    // The reader went away (EPIPE): nothing more can be written; the process carries on.
    this.stream.on("error", () => {
      this.broken = true;
    });
  }

  write(chunk: string): void {
    if (this.broken) {
      this.drop(chunk);
      return;
    }
    if (!this.writing) {
      this.send(chunk);
      return;
    }
    const bytes = Buffer.byteLength(chunk);
    if (this.queuedBytes + bytes > this.maxBytes) {
      this.drop(chunk);
      return;
    }
    this.queue.push({ chunk, bytes });
    this.queuedBytes += bytes;
  }

  private send(chunk: string): void {
    this.writing = true;
    this.stream.write(chunk, () => this.sent());
  }

  private sent(): void {
    this.writing = false;
    const next = this.queue.shift();
    if (next !== undefined) {
      this.queuedBytes -= next.bytes;
      this.send(next.chunk);
      return;
    }
    for (const wake of this.waiters.splice(0)) wake();
    const dropped = this.unreported;
    if (dropped === 0) return;
    this.unreported = 0;
    this.onCaughtUp?.(dropped);
  }

  private drop(chunk: string): void {
    const lines = countLines(chunk);
    this.dropped += lines;
    this.unreported += lines;
  }

  /** Resolves once everything written so far has been taken by the reader, or after `timeoutMs`. */
  settled(timeoutMs: number): Promise<void> {
    if (!this.writing) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      timer.unref();
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /**
   * At exit, where nothing runs in the background any more: what waits here, then `last`, goes out
   * synchronously, once everything handed to the stream has reached the reader's side (a write the
   * pipe took at once, whose callback has not run yet). Otherwise (the reader is slow or has
   * stopped) it is dropped: the process exits rather than hangs, and keeps the order of what it wrote.
   */
  writeAtExit(last: string): void {
    const chunks = this.queue.map((q) => q.chunk);
    if (last) chunks.push(last);
    this.queue.length = 0;
    this.queuedBytes = 0;
    const fd = (this.stream as { fd?: unknown }).fd;
    if (this.broken || this.stream.writableLength > 0 || typeof fd !== "number") {
      for (const chunk of chunks) this.drop(chunk);
      return;
    }
    for (const [i, chunk] of chunks.entries()) {
      try {
        writeSync(fd, chunk);
      } catch {
        // A full pipe (EAGAIN) or a reader that is gone: nothing more can be done at exit.
        for (const rest of chunks.slice(i)) this.drop(rest);
        return;
      }
    }
  }
}

function countLines(text: string): number {
  let n = 0;
  for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) n++;
  return n;
}

export interface LogLinesOptions {
  /** How long a line may wait for others before it is written. */
  delayMs?: number;
  /**
   * The largest chunk written at once, in bytes. PIPE_BUF by default: a write of at most that many
   * bytes to a pipe is never interleaved with another process's, so `--workers` sharing standard
   * output never split each other's lines.
   */
  chunkBytes?: number;
}

/**
 * Gathers log lines and writes them in chunks of whole lines.
 *
 * One write per access log line cost more of a request's CPU time than building the line. Here a
 * line waits at most `delayMs` (or until a chunk is full, or a warning or an error comes, see
 * `createLogger`, or the process exits).
 */
export class LogLines implements DestinationStream {
  private lines: string[] = [];
  private bytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly delayMs: number;
  private readonly chunkBytes: number;

  constructor(
    private readonly sink: LineSink,
    options: LogLinesOptions = {},
  ) {
    this.delayMs = options.delayMs ?? 50;
    this.chunkBytes = options.chunkBytes ?? PIPE_BUF;
  }

  write(line: string): void {
    const size = Buffer.byteLength(line);
    if (this.bytes + size > this.chunkBytes) this.flush();
    this.lines.push(line);
    this.bytes += size;
    if (this.timer === undefined) {
      this.timer = setTimeout(() => this.flush(), this.delayMs);
      this.timer.unref();
    }
  }

  /** Hands what is gathered to the sink; `done` (as pino's `logger.flush(cb)` passes it) is called at once. */
  flush(done?: (err?: Error) => void): void {
    const chunk = this.take();
    if (chunk) this.sink.write(chunk);
    done?.();
  }

  /** What is gathered, as one chunk, no longer held here ("" when nothing is). */
  take(): string {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.lines.length === 0) return "";
    const chunk = this.lines.length === 1 ? (this.lines[0] as string) : this.lines.join("");
    this.lines = [];
    this.bytes = 0;
    return chunk;
  }
}

/** pino's number for the warn level. */
const WARN = 40;

/**
 * createLogger's logMethod hook: a warning or an error writes the lines gathered so far, its own
 * included, at once. One function for every logger, so that `accessLog` can tell it from others.
 */
export function flushOnWarning(this: Logger, args: Parameters<LogFn>, method: LogFn, level: number): void {
  method.apply(this, args);
  if (level < WARN) return;
  const stream = (this as unknown as Record<symbol, unknown>)[pino.symbols.streamSym];
  if (stream instanceof LogLines) stream.flush();
}
