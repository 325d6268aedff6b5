import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    pool: "forks",
    // The JSON report is what .ci/run counts from; the default reporter is for people.
    reporters: ["default", "json"],
    outputFile: { json: ".vitest-results.json" },
  },
});
