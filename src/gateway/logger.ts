import { fstatSync } from "node:fs";
import { type Logger, pino } from "pino";
import { type Config, DEFAULT_LOG_BUFFER } from "../config/index.js";
import { flushOnWarning, LogLines, StandardOutput } from "./log-lines.js";

let standardOutput: { lines: LogLines; out?: StandardOutput } | undefined;

/**
 * Standard output and its line gatherer: one per process, shared by its loggers, written out at
 * exit. The first logger made sets its buffer and reports dropped lines once the reader caught up.
 * A regular file takes each write as it comes (the disk sets the pace, not a reader): it is
 * written synchronously, as Node writes files, which costs a request less than a stream does.
 */
function standardOutputLines(bufferBytes: number): { lines: LogLines; out?: StandardOutput } {
  if (!standardOutput) {
    if (isFile(1)) {
      const lines = new LogLines(pino.destination({ dest: 1, sync: true }));
      process.on("exit", () => lines.flush());
      standardOutput = { lines };
    } else {
      const out = new StandardOutput({ maxBytes: bufferBytes });
      const lines = new LogLines(out);
      process.on("exit", () => out.writeAtExit(lines.take()));
      standardOutput = { lines, out };
    }
  }
  return standardOutput;
}

function isFile(fd: number): boolean {
  try {
    return fstatSync(fd).isFile();
  } catch {
    return false;
  }
}

/** Log lines dropped so far because standard output could not keep up (0 when nothing was logged). */
export function droppedLogLines(): number {
  return standardOutput?.out?.dropped ?? 0;
}

/** Resolves once the log written so far has been taken by its reader, or after `timeoutMs`. */
export function logWritten(timeoutMs: number): Promise<void> {
  if (!standardOutput) return Promise.resolve();
  standardOutput.lines.flush();
  return standardOutput.out?.settled(timeoutMs) ?? Promise.resolve();
}

/**
 * The process's logger: JSON lines, or human-readable ones only when asked (log.pretty). JSON lines
 * are written in chunks (see LogLines); a warning or an error writes what is gathered at once.
 */
export function createLogger(
  config: Pick<Config["log"], "level" | "pretty"> & { buffer?: number },
  destination?: LogLines,
): Logger {
  if (config.pretty)
    return pino({ level: config.level, transport: { target: "pino-pretty", options: { destination: 2 } } });
  const std = destination ? undefined : standardOutputLines(config.buffer ?? DEFAULT_LOG_BUFFER);
  const logger = pino(
    {
      level: config.level,
      hooks: { logMethod: flushOnWarning },
    },
    destination ?? std?.lines,
  );
  if (std?.out && !std.out.onCaughtUp) {
    std.out.onCaughtUp = (droppedLines) =>
      logger.warn({ droppedLines }, "standard output could not keep up: log lines were dropped");
  }
  return logger;
}
