import type { Registry } from "prom-client";

/**
 * Counters and histograms for the request path, read by prom-client's registry like its own.
 *
 * prom-client validates and hashes the label object on every `inc`/`observe` (and `startTimer`
 * allocates twice more); at the gateway's rates that was a measurable share of a request's CPU
 * time. Here a series is looked up once by its label values and then counted in place; the
 * exposition format, help text and `aggregator` (sum, for `--workers`) are prom-client's.
 */

type Labels = Record<string, string>;

interface MetricValue {
  labels: Labels;
  value: number;
  metricName?: string;
}

interface MetricJson {
  name: string;
  help: string;
  type: "counter" | "histogram";
  values: MetricValue[];
  aggregator: "sum";
}

interface Options<L extends string> {
  name: string;
  help: string;
  labelNames: readonly L[];
  registers: Registry[];
}

/** The series of one metric, by the values of its labels in `labelNames` order. */
class Series<L extends string, S> {
  private readonly byKey = new Map<string, { labels: Labels; state: S }>();

  constructor(
    private readonly labelNames: readonly L[],
    private readonly make: () => S,
  ) {}

  get(values: Record<L, string>): S {
    let key = "";
    for (const name of this.labelNames) key += `${values[name]}\u0000`;
    let entry = this.byKey.get(key);
    if (!entry) {
      const labels: Labels = {};
      for (const name of this.labelNames) labels[name] = values[name];
      entry = { labels, state: this.make() };
      this.byKey.set(key, entry);
    }
    return entry.state;
  }

  entries(): Iterable<{ labels: Labels; state: S }> {
    return this.byKey.values();
  }
}

function register(metric: { name: string }, registries: Registry[]): void {
  // prom-client's registry takes any object with name, help, type and get(); its types want its own classes.
  for (const r of registries)
    r.registerMetric(metric as unknown as Parameters<Registry["registerMetric"]>[0]);
}

export class HotCounter<L extends string> {
  readonly type = "counter";
  readonly name: string;
  readonly help: string;
  private readonly series: Series<L, { n: number }>;

  constructor(options: Options<L>) {
    this.name = options.name;
    this.help = options.help;
    this.series = new Series(options.labelNames, () => ({ n: 0 }));
    register(this, options.registers);
  }

  inc(labels: Record<L, string>, by = 1): void {
    this.series.get(labels).n += by;
  }

  async get(): Promise<MetricJson> {
    const values = [...this.series.entries()].map(({ labels, state }) => ({ labels, value: state.n }));
    return { name: this.name, help: this.help, type: "counter", values, aggregator: "sum" };
  }
}

interface Buckets {
  counts: Float64Array;
  sum: number;
  count: number;
}

export class HotHistogram<L extends string> {
  readonly type = "histogram";
  readonly name: string;
  readonly help: string;
  private readonly bounds: readonly number[];
  private readonly series: Series<L, Buckets>;

  constructor(options: Options<L> & { buckets: readonly number[] }) {
    this.name = options.name;
    this.help = options.help;
    this.bounds = [...options.buckets].sort((a, b) => a - b);
    this.series = new Series(options.labelNames, () => ({
      counts: new Float64Array(this.bounds.length),
      sum: 0,
      count: 0,
    }));
    register(this, options.registers);
  }

  observe(labels: Record<L, string>, value: number): void {
    const s = this.series.get(labels);
    s.sum += value;
    s.count++;
    const { bounds } = this;
    for (let i = 0; i < bounds.length; i++) {
      if (value <= (bounds[i] as number)) {
        (s.counts[i] as number)++;
        return;
      }
    }
  }

  async get(): Promise<MetricJson> {
    const values: MetricValue[] = [];
    for (const { labels, state } of this.series.entries()) {
      let cumulative = 0;
      this.bounds.forEach((le, i) => {
        cumulative += state.counts[i] as number;
        values.push({
          labels: { le: String(le), ...labels },
          value: cumulative,
          metricName: `${this.name}_bucket`,
        });
      });
      values.push({
        labels: { le: "+Inf", ...labels },
        value: state.count,
        metricName: `${this.name}_bucket`,
      });
      values.push({ labels, value: state.sum, metricName: `${this.name}_sum` });
      values.push({ labels, value: state.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: "histogram", values, aggregator: "sum" };
  }
}
