/**
 * Every shipped config explains its sample requests (config/examples/samples/requests.yaml) through
 * the real CLI, so an example that stops matching its own requests fails here.
 */
import { readdir, readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { runCli } from "../helpers/process.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const SAMPLES = `${ROOT}config/examples/samples/`;

interface Sample {
  explain: string;
  body?: string;
  headers?: string[];
  /** Environment the config needs (compose.yaml takes its admin token from ADMIN_TOKEN). */
  env?: Record<string, string>;
  expect: string;
}

const manifest = parse(await readFile(`${SAMPLES}requests.yaml`, "utf8")) as Record<string, Sample[]>;

describe("shipped configs with their sample requests", () => {
  it("has samples for every shipped config", async () => {
    const examples = (await readdir(`${ROOT}config/examples`)).filter((f) => f.endsWith(".yaml"));
    expect(Object.keys(manifest).sort()).toEqual(
      ["config/gateway.yaml", ...examples.map((f) => `config/examples/${f}`)].sort(),
    );
  });

  for (const [config, samples] of Object.entries(manifest)) {
    for (const sample of samples) {
      it(`${config}: ${sample.explain} shows ${sample.expect}`, async () => {
        const args = [
          "check-config",
          "--config",
          `${ROOT}${config}`,
          "--explain",
          ...sample.explain.split(" "),
        ];
        if (sample.body) args.push("--body", `${SAMPLES}${sample.body}`);
        for (const header of sample.headers ?? []) args.push("--header", header);
        const r = await runCli(args, sample.env);
        expect(r.stderr).toBe("");
        expect(r.code).toBe(0);
        expect(r.stdout).toContain(sample.expect);
        expect(r.stdout).not.toContain("warning:");
      });
    }
  }
});
