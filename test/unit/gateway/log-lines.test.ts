import { spawn } from "node:child_process";
import { once } from "node:events";
import { closeSync, openSync } from "node:fs";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import { accessLog } from "../../../src/gateway/access-log.js";
import { createLogger } from "../../../src/gateway/index.js";
import { type LineSink, LogLines, StandardOutput } from "../../../src/gateway/log-lines.js";
import { RequestOutcome } from "../../../src/gateway/observe.js";

/** A sink that keeps every chunk it is given. */
function recorder(): LineSink & { chunks: string[] } {
  return {
    chunks: [],
    write(chunk: string) {
      this.chunks.push(chunk);
    },
  };
}

afterEach(() => {
  vi.useRealTimers();
});

describe("LogLines", () => {
  it("holds lines for delayMs, then writes them in order as one chunk", () => {
    vi.useFakeTimers();
    const sink = recorder();
    const lines = new LogLines(sink, { delayMs: 50 });
    lines.write("a\n");
    vi.advanceTimersByTime(20);
    lines.write("b\n");
    vi.advanceTimersByTime(29);
    expect(sink.chunks).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(sink.chunks).toEqual(["a\nb\n"]);
    // The next line starts a new wait.
    lines.write("c\n");
    vi.advanceTimersByTime(49);
    expect(sink.chunks).toEqual(["a\nb\n"]);
    vi.advanceTimersByTime(1);
    expect(sink.chunks).toEqual(["a\nb\n", "c\n"]);
  });

  it("writes chunks of whole lines, none over chunkBytes unless one line alone is", () => {
    fc.assert(
      fc.property(
        fc.array(fc.string({ unit: "grapheme", maxLength: 60 }), { maxLength: 80 }),
        fc.integer({ min: 1, max: 200 }),
        (texts, chunkBytes) => {
          const sink = recorder();
          const lines = new LogLines(sink, { chunkBytes, delayMs: 1_000_000 });
          const written = texts.map((t) => `${t}\n`);
          for (const line of written) lines.write(line);
          lines.flush();
          expect(sink.chunks.join("")).toBe(written.join(""));
          for (const chunk of sink.chunks) {
            expect(chunk.endsWith("\n")).toBe(true);
            const alone = written.includes(chunk);
            if (!alone) expect(Buffer.byteLength(chunk)).toBeLessThanOrEqual(chunkBytes);
          }
        },
      ),
    );
  });

  it("passes a flush callback straight through, lines or none", () => {
    const sink = recorder();
    const lines = new LogLines(sink);
    const done = vi.fn();
    lines.flush(done);
    lines.write("x\n");
    lines.flush(done);
    expect(done).toHaveBeenCalledTimes(2);
    expect(sink.chunks).toEqual(["x\n"]);
  });
});

describe("createLogger", () => {
  it("holds info lines back but writes at once, in order, when a warning or an error comes", () => {
    vi.useFakeTimers();
    const sink = recorder();
    const logger = createLogger({ level: "info", pretty: false }, new LogLines(sink, { delayMs: 50 }));
    logger.info({ n: 1 }, "first");
    logger.info({ n: 2 }, "second");
    expect(sink.chunks).toEqual([]);
    logger.warn("careful");
    const msgs = sink.chunks
      .join("")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l).msg);
    expect(msgs).toEqual(["first", "second", "careful"]);
    logger.error("bad");
    expect(sink.chunks).toHaveLength(2);
  });

  it("gathers access lines with the rest, and a warning writes them in order", () => {
    vi.useFakeTimers();
    const sink = recorder();
    const logger = createLogger({ level: "info", pretty: false }, new LogLines(sink, { delayMs: 50 }));
    accessLog(logger)({
      time: 0,
      requestId: "r-1",
      route: "create-invoice",
      method: "POST",
      path: "/invoices",
      storeKey: "k",
      outcome: RequestOutcome.Executed,
      status: 201,
      upstreamMs: 20.04,
      totalMs: 21.06,
    });
    expect(sink.chunks).toEqual([]);
    logger.warn("careful");
    const lines = sink.chunks
      .join("")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.msg)).toEqual(["protected request", "careful"]);
    expect(lines[0]).toMatchObject({ level: 30, requestId: "r-1", key: "k", upstreamMs: 20, totalMs: 21.1 });
    expect(lines[0].pid).toBe(process.pid);
  });

  it("writes what it holds when the process exits, however it exits, to a file too", async () => {
    const gateway = fileURLToPath(new URL("../../../dist/gateway/index.js", import.meta.url));
    const file = join(await mkdtemp(join(tmpdir(), "idem-log-")), "out.log");
    const script = `
      const { createLogger } = await import(${JSON.stringify(gateway)});
      const logger = createLogger({ level: "info", pretty: false });
      for (let i = 0; i < 3; i++) logger.info({ i }, "held");
      process.exit(3);`;
    const fd = openSync(file, "w");
    try {
      const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
        stdio: ["ignore", fd, "inherit"],
      });
      expect(await new Promise<number | null>((resolve) => child.on("close", resolve))).toBe(3);
    } finally {
      closeSync(fd);
    }
    const lines = (await readFile(file, "utf8"))
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.i)).toEqual([0, 1, 2]);
  });

  it("writes what it holds when the process exits, however it exits", async () => {
    const gateway = fileURLToPath(new URL("../../../dist/gateway/index.js", import.meta.url));
    for (const exit of ["process.exit(3)", "undefined"]) {
      // The warning is written at once, its write's callback still to come when the process exits.
      const script = `
        const { createLogger } = await import(${JSON.stringify(gateway)});
        const logger = createLogger({ level: "info", pretty: false });
        logger.info({ i: 0 }, "held");
        logger.warn({ i: 1 }, "written at once");
        logger.info({ i: 2 }, "held");
        ${exit};`;
      const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      let out = "";
      child.stdout.on("data", (c: Buffer) => {
        out += c.toString();
      });
      const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
      expect(code).toBe(exit === "undefined" ? 0 : 3);
      const lines = out
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l));
      expect(lines.map((l) => l.i)).toEqual([0, 1, 2]);
    }
  });
});

/** A reader that takes one chunk when told to, like a pipe whose reader is slow. */
function slowReader() {
  const taken: string[] = [];
  const pending: (() => void)[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      taken.push(chunk.toString());
      pending.push(done);
    },
  });
  return {
    stream,
    taken,
    /** The reader takes what it was given so far. */
    async read(): Promise<void> {
      while (pending.length > 0) {
        pending.shift()?.();
        await new Promise((resolve) => setImmediate(resolve));
      }
    },
  };
}

describe("StandardOutput", () => {
  it("writes chunks in order, one at a time, and drops (counting lines) what does not fit while the reader is slow", async () => {
    const reader = slowReader();
    const out = new StandardOutput({ stream: reader.stream, maxBytes: 10 });
    const reports: number[] = [];
    out.onCaughtUp = (n) => reports.push(n);
    out.write("a1\na2\n"); // out at once
    out.write("b1\n"); // waits
    out.write("c1\nc2\n"); // waits: 9 bytes
    out.write("d1\nd2\n"); // would be 15: dropped, 2 lines
    expect(reader.taken).toEqual(["a1\na2\n"]);
    expect(out.dropped).toBe(2);
    await reader.read();
    expect(reader.taken).toEqual(["a1\na2\n", "b1\n", "c1\nc2\n"]);
    expect(reports).toEqual([2]);
    // Caught up: the next chunk goes out at once, and nothing more is reported.
    out.write("e1\n");
    await reader.read();
    expect(reader.taken.at(-1)).toBe("e1\n");
    expect(reports).toEqual([2]);
  });

  it("settles once the reader has taken everything, or after its timeout", async () => {
    const reader = slowReader();
    const out = new StandardOutput({ stream: reader.stream, maxBytes: 1024 });
    out.write("a\n");
    out.write("b\n");
    let settled = false;
    const done = out.settled(60_000).then(() => {
      settled = true;
    });
    await new Promise((resolve) => setImmediate(resolve));
    expect(settled).toBe(false);
    await reader.read();
    await done;
    expect(reader.taken).toEqual(["a\n", "b\n"]);
    vi.useFakeTimers();
    out.write("c\n");
    const late = out.settled(50);
    vi.advanceTimersByTime(50);
    await late;
  });

  it("at exit drops what a stalled reader has not taken rather than hang or reorder", async () => {
    const reader = slowReader();
    const out = new StandardOutput({ stream: reader.stream, maxBytes: 1024 });
    out.write("a\n");
    out.write("b\n");
    out.writeAtExit("c\nd\n");
    expect(reader.taken).toEqual(["a\n"]);
    expect(out.dropped).toBe(3);
    reader.stream.destroy();
    await once(reader.stream, "close");
  });
});
