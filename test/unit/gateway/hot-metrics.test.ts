import { AggregatorRegistry, Counter, Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { HotCounter, HotHistogram } from "../../../src/gateway/hot-metrics.js";

const buckets = [0.001, 0.01, 0.1, 1];
const observations: [string, number][] = [
  ["a", 0.0005],
  ["a", 0.001],
  ["b", 0.05],
  ["a", 0.5],
  ["b", 7],
];

describe("HotCounter and HotHistogram", () => {
  it("expose what prom-client's Counter and Histogram expose for the same observations", async () => {
    const hot = new Registry();
    const reference = new Registry();
    const h1 = new HotHistogram({
      name: "t_seconds",
      help: "h",
      labelNames: ["route"],
      buckets,
      registers: [hot],
    });
    const h2 = new Histogram({
      name: "t_seconds",
      help: "h",
      labelNames: ["route"],
      buckets,
      registers: [reference],
    });
    const c1 = new HotCounter({
      name: "t_total",
      help: "c",
      labelNames: ["route", "outcome"],
      registers: [hot],
    });
    const c2 = new Counter({
      name: "t_total",
      help: "c",
      labelNames: ["route", "outcome"],
      registers: [reference],
    });
    for (const [route, v] of observations) {
      h1.observe({ route }, v);
      h2.observe({ route }, v);
      c1.inc({ route, outcome: v > 0.01 ? "slow" : "fast" });
      c2.inc({ route, outcome: v > 0.01 ? "slow" : "fast" });
    }
    expect(await hot.metrics()).toBe(await reference.metrics());
  });

  it("sum across workers' registries", async () => {
    const json = await Promise.all(
      [1, 2].map(async (n) => {
        const r = new Registry();
        const h = new HotHistogram({
          name: "w_seconds",
          help: "h",
          labelNames: ["op"],
          buckets,
          registers: [r],
        });
        for (let i = 0; i < n; i++) h.observe({ op: "begin" }, 0.005);
        return r.getMetricsAsJSON();
      }),
    );
    const text = await AggregatorRegistry.aggregate(json).metrics();
    expect(text).toContain('w_seconds_count{op="begin"} 3');
    expect(text).toContain('w_seconds_bucket{le="0.01",op="begin"} 3');
  });
});
