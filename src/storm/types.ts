/** The default body template of a storm's requests: one invoice per key. */
export const DEFAULT_BODY = '{"invoiceNumber":"{key}","transactionId":"T-{i}","amount":{i}}';

/** How the copies of one operation are sent. */
export const Pattern = {
  /** All sends of an operation at once: the retry storm after a shared timeout. */
  Burst: "burst",
  /** Retry on 5xx, 409, 429, timeouts and network errors, waiting backoff·2^n with full jitter. */
  Backoff: "backoff",
  /** Give up after `timeoutMs` and retry at once, as a robot does; an answer ends the operation. */
  Timeout: "timeout",
} as const;
export type Pattern = (typeof Pattern)[keyof typeof Pattern];

export interface StormOptions {
  /** Full URL the requests go to, path included. */
  target: string;
  method: string;
  /** Logical operations. */
  keys: number;
  /** Retries per operation: each operation is sent up to retries + 1 times. */
  retries: number;
  pattern: Pattern;
  /** Operations in flight at once. */
  concurrency: number;
  /** Connections to the target at most. */
  connections: number;
  /** Sends per second at most; undefined: unlimited. */
  rate?: number | undefined;
  /** Client timeout of one send. */
  timeoutMs: number;
  /** Base delay of the backoff pattern. */
  backoffMs: number;
  /** Hard bound: no operation starts after this, and sends still under way are abandoned. */
  maxDurationMs: number;
  /** Body template: {key} (operation key), {i} (operation index), {run} (run id). */
  body: string;
  /** Header templates, same placeholders. */
  headers: Record<string, string>;
  /** Send `Idempotency-Key: {key}`; otherwise the gateway must derive the key from the body. */
  keyHeader: boolean;
  /** The backend's /stats, read before and after to count executions and duplicates. */
  statsUrl?: string | undefined;
  runId?: string;
  onProgress?: (done: number, total: number) => void;
  /** Also collect what the HTML report draws (StormReport.detail). */
  detail?: boolean;
}

export interface BackendStats {
  executions: number;
  distinctKeys: number;
  duplicates: number;
}

export interface StormReport {
  target: string;
  pattern: Pattern;
  operations: number;
  retries: number;
  sends: number;
  durationMs: number;
  /** Answers (of any status) per second. */
  throughput: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
  /** Answers by status code, plus "timeout" and "error" for sends that got none. */
  statuses: Record<string, number>;
  replayed: number;
  conflicts: number;
  mismatches: number;
  timeouts: number;
  errors: number;
  consistency: {
    /** Operations with at least one 2xx answer. */
    succeeded: number;
    /** Operations whose 2xx answers were not all byte-identical. */
    inconsistent: number;
  };
  /** From the backend's /stats: what this storm made it execute. */
  backend?: { executions: number; duplicates: number };
  stoppedEarly: boolean;
  /** With StormOptions.detail: what the HTML report draws. */
  detail?: StormDetail;
}

/** The answers of one slice of the storm by class, as rates per second over the slice. */
export interface StormSecond {
  /** Start of the slice, in seconds since the start of the storm. */
  at: number;
  "2xx": number;
  "3xx": number;
  "4xx": number;
  "5xx": number;
  /** Sends that got no answer: timeouts and network errors. */
  none: number;
}

/** One operation of the storm as the report lists it. */
export interface StormOperation {
  key: string;
  sends: number;
  /** Each send's status, or "timeout" / "error", in the order they were sent. */
  statuses: string[];
  /** Its 2xx answers were not all byte-identical. */
  differing: boolean;
}

export interface StormDetail {
  /** The latency distribution as an HDR plot draws it: [percentile, ms], up to the largest. */
  percentiles: [number, number][];
  /** Slices of the run, as many as fit 120 (100 ms at the least). */
  timeline: StormSecond[];
  sliceMs: number;
  /** How many operations took n sends, by n. */
  sendsPerOperation: Record<string, number>;
  /** Operations whose 2xx answers were all identical, differed, or that got no 2xx. */
  operationsBy: { identical: number; differing: number; no2xx: number };
  /** The worst operations (differing 2xx first, then no 2xx, then most sends), at most 20. */
  worst: StormOperation[];
}
