import { type DestinationStream, type LogFn, type Logger, pino } from "pino";

/** Where gathered lines go: standard output in the gateway (see `standardOutputSink`), a recorder in tests. */
export interface LineSink {
  write(chunk: string): unknown;
}

/**
 * Standard output, written synchronously as Node writes its own standard output to files and pipes
 * on Linux. A background write would hand every chunk to libuv's thread pool, and waking one of its
 * threads cost a request's worth of CPU time on a busy machine. SonicBoom retries short and busy writes.
 */
export function standardOutputSink(): LineSink {
  return pino.destination({ dest: 1, sync: true });
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
    this.chunkBytes = options.chunkBytes ?? 4096;
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
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.lines.length > 0) {
      const chunk = this.lines.length === 1 ? (this.lines[0] as string) : this.lines.join("");
      this.lines = [];
      this.bytes = 0;
      this.sink.write(chunk);
    }
    done?.();
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
