import { type Logger, pino } from "pino";
import type { Config } from "../config/index.js";
import { flushOnWarning, LogLines, standardOutputSink } from "./log-lines.js";

let standardOutput: LogLines | undefined;

/** Standard output's line gatherer: one per process, shared by its loggers, written out at exit. */
function standardOutputLines(): LogLines {
  if (!standardOutput) {
    const lines = new LogLines(standardOutputSink());
    process.on("exit", () => lines.flush());
    standardOutput = lines;
  }
  return standardOutput;
}

/**
 * The process's logger: JSON lines, or human-readable ones only when asked (log.pretty). JSON lines
 * are written in chunks (see LogLines); a warning or an error writes what is gathered at once.
 */
export function createLogger(
  config: Pick<Config["log"], "level" | "pretty">,
  destination?: LogLines,
): Logger {
  if (config.pretty)
    return pino({ level: config.level, transport: { target: "pino-pretty", options: { destination: 2 } } });
  const lines = destination ?? standardOutputLines();
  return pino(
    {
      level: config.level,
      hooks: { logMethod: flushOnWarning },
    },
    lines,
  );
}
