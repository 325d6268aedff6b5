import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);

describe("warming undici's HTTP parser", () => {
  it("in a cluster worker, reaches no server but its own", async () => {
    // A worker's listen on port 0 goes through the cluster primary, which shares the port with the
    // other workers' servers on port 0: the warm-up's GET / was answered by a gateway, and forwarded.
    const helper = fileURLToPath(new URL("../helpers/warm-in-cluster.ts", import.meta.url));
    const { stdout } = await run(process.execPath, ["--import", "tsx", helper], { timeout: 20_000 });
    expect(JSON.parse(stdout)).toEqual({ reached: 0 });
  });
});
