/**
 * The memory store's records hold what they must and no more. Measured in a child process with
 * --expose-gc (the heap of a test worker is shared with everything else it runs).
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("../../..", import.meta.url));

interface Footprint {
  records: number;
  heldPerRecord: number;
  countedPerRecord: number;
  ids: number;
  heldPerId: number;
}

describe("what a stored record holds", () => {
  it("a completed record keeps no attempt token, and ids are single flat strings", async () => {
    const { stdout } = await run(
      process.execPath,
      ["--expose-gc", "--import", "tsx", "test/helpers/record-footprint.ts", "20000"],
      { cwd: ROOT },
    );
    const f = JSON.parse(stdout) as Footprint;
    expect(f.records).toBe(20_000);
    // A 36-character id is about 60 bytes as one string; as the concatenation tree that
    // randomUUID() returns, about 490.
    expect(f.heldPerId).toBeLessThan(150);
    // A record with a 64-byte body held about 640 bytes; with its attempt's token kept as such a
    // tree, about 1,120. Either way within what it is counted as against maxBytes.
    expect(f.heldPerRecord).toBeLessThan(800);
    expect(f.heldPerRecord).toBeLessThan(f.countedPerRecord);
  }, 60_000);
});
