/**
 * A model of one key's state machine, and fast-check commands that drive a real store and the model
 * side by side (fc.commands). After every step the store must show what the model says, and every
 * visible change must be one of the documented transitions. A third store passes this and the
 * contract suite, or it is not a store.
 */
import { randomUUID } from "node:crypto";
import fc from "fast-check";
import { expect, vi } from "vitest";
import {
  type IdempotencyStore,
  type LeaseTimes,
  RecordState,
  type StoredRecord,
  type StoredResponse,
} from "../../src/store/index.js";

export const MODEL_LEASE_MS = 300;
/** Long, so that no number of lease and settle steps in one run reaches it by accident. */
export const MODEL_TTL_MS = 30 * 86_400_000;
/** Released answers are held as long, so that only a RecordExpire step ends them too. */
const HOLD_MS = MODEL_TTL_MS;
export const MODEL_SETTLE_MS = 600_000;

const times: LeaseTimes = { leaseMs: MODEL_LEASE_MS, ttlMs: MODEL_TTL_MS, settleMs: MODEL_SETTLE_MS };

/** What one store must offer the model: the store, and ways to make its time pass for one key. */
export interface ModelFixture {
  store: IdempotencyStore;
  /** Every lease of the key runs out (a stalled or dead gateway). */
  leaseLapse(key: string): Promise<void>;
  /** Leases and settle times run out (the backend can no longer commit anything sent). */
  settleElapse(key: string): Promise<void>;
  /** Everything runs out: records past their TTL (an unknown one is then `expired`, not gone). */
  recordExpire(key: string): Promise<void>;
  /** The wall clock jumps (NTP): nothing about the key may change. */
  clockStep(): Promise<void>;
  /** Whether a waiter has settled, given the store a fair chance to tell it. */
  settled(waiter: Promise<unknown>): Promise<boolean>;
}

type Visible = "free" | "expired" | "in_flight" | "completed" | "unknown" | "released";

/** Visible transitions the documentation names (README, "Record states"); anything else is a bug. */
const ALLOWED: Record<Visible, readonly Visible[]> = {
  free: ["in_flight"],
  // "expired": the lease and the TTL ran out in one step of the model's clock.
  in_flight: ["completed", "unknown", "released", "free", "expired"],
  // completed, released, free: the late answer (or release) of the attempt whose lease had run out.
  unknown: ["in_flight", "completed", "released", "expired", "free"],
  completed: ["free"],
  released: ["free", "in_flight"],
  expired: ["in_flight", "free"],
};

export interface Model {
  state: "free" | "in_flight" | "completed" | "unknown" | "released" | "expired";
  owner: number | undefined;
  leaseAlive: boolean;
  /** The owner took the key over from unknown: a release without an answer gives it back. */
  tookUnknown: boolean;
  fingerprint: string | undefined;
  /** A request sent under the key may still commit. */
  settling: boolean;
  body: string | undefined;
  waiters: number;
}

export interface Real {
  fx: ModelFixture;
  key: string;
  tokens: Map<number, string>;
  waiters: { promise: Promise<StoredRecord | undefined>; controller: AbortController }[];
  last: Visible;
}

export function initialModel(): Model {
  return {
    state: "free",
    owner: undefined,
    leaseAlive: false,
    tookUnknown: false,
    fingerprint: undefined,
    settling: false,
    body: undefined,
    waiters: 0,
  };
}

function visible(m: Model): Visible {
  if (m.state === "in_flight" && !m.leaseAlive) return "unknown";
  return m.state;
}

function visibleOf(record: StoredRecord | undefined): Visible {
  return record ? record.state : "free";
}

const answer = (body: string): StoredResponse => ({
  status: 201,
  headers: [["x-by", body]],
  body: Buffer.from(body),
});

/** After every step: the store shows the model's state, reached by a documented transition. */
async function checkInvariants(m: Model, r: Real): Promise<void> {
  const record = await r.fx.store.get(r.key);
  const want = visible(m);
  const got = visibleOf(record);
  // `expired` is free to a reader; only a begin tells the difference.
  expect(got).toBe(want === "expired" ? "free" : want);
  if (record && record.state !== RecordState.Released) expect(record.fingerprint).toBe(m.fingerprint);
  if (record?.state === RecordState.Completed)
    expect(Buffer.from(record.response.body).toString()).toBe(m.body);
  if (record?.state === RecordState.Unknown) expect(record.settlesInMs > 0).toBe(m.settling);
  if (want !== r.last) expect(ALLOWED[r.last], `${r.last} -> ${want}`).toContain(want);
  r.last = want;
  // No waiter is left waiting on a key that is no longer in flight.
  if (want !== "in_flight") {
    for (const w of r.waiters.splice(0)) {
      expect(await r.fx.settled(w.promise)).toBe(true);
      expect(visibleOf(await w.promise)).not.toBe("in_flight");
    }
    m.waiters = 0;
  }
}

type Cmd = fc.AsyncCommand<Model, Real>;

class Begin implements Cmd {
  constructor(
    readonly attempt: number,
    readonly fp: string,
    readonly takeOver: boolean,
    readonly replyLost: boolean,
  ) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    const token = randomUUID();
    const v = visible(m);
    const result = await r.fx.store.begin(r.key, {
      token,
      fingerprint: this.fp,
      takeOverUnknown: this.takeOver,
      ...times,
    });
    const took =
      v === "free" || v === "released"
        ? "fresh"
        : v === "expired"
          ? "expired"
          : v === "unknown" && this.takeOver && m.fingerprint === this.fp
            ? "unknown"
            : undefined;
    if (took === undefined) {
      expect(result.acquired).toBe(false);
      if (!result.acquired) expect(visibleOf(result.record)).toBe(v);
    } else {
      expect(result).toMatchObject({ acquired: true, took });
      if (this.replyLost) {
        // The caller never learnt it began: it undoes the begin with a fenced release, as the engine does.
        expect(await r.fx.store.release(r.key, token)).toBe(true);
        if (took === "unknown") {
          m.state = "unknown";
          m.owner = undefined;
        } else {
          Object.assign(m, initialModel(), { waiters: m.waiters });
        }
      } else {
        r.tokens.set(this.attempt, token);
        m.state = "in_flight";
        m.owner = this.attempt;
        m.leaseAlive = true;
        m.tookUnknown = took === "unknown";
        m.fingerprint = this.fp;
        if (took !== "unknown") m.settling = true;
      }
    }
    await checkInvariants(m, r);
  }
  toString = () => `Begin(${this.attempt}, ${this.fp}, takeOver=${this.takeOver}, lost=${this.replyLost})`;
}

/** The attempt's write succeeds only if it owns the in-flight record (fencing). */
function owns(m: Model, attempt: number): boolean {
  return m.state === "in_flight" && m.owner === attempt;
}

class Extend implements Cmd {
  constructor(readonly attempt: number) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    const ok = await r.fx.store.extend(r.key, r.tokens.get(this.attempt) ?? "never-began", times);
    expect(ok).toBe(owns(m, this.attempt) && m.leaseAlive);
    if (ok) m.settling = true;
    await checkInvariants(m, r);
  }
  toString = () => `Extend(${this.attempt})`;
}

class Complete implements Cmd {
  constructor(readonly attempt: number) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    const body = `answer of ${this.attempt}`;
    const ok = await r.fx.store.complete(
      r.key,
      r.tokens.get(this.attempt) ?? "x",
      answer(body),
      MODEL_TTL_MS,
    );
    expect(ok).toBe(owns(m, this.attempt));
    if (ok) Object.assign(m, { state: "completed", owner: undefined, body });
    await checkInvariants(m, r);
  }
  toString = () => `Complete(${this.attempt})`;
}

class MarkUnknown implements Cmd {
  constructor(readonly attempt: number) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    const ok = await r.fx.store.markUnknown(r.key, r.tokens.get(this.attempt) ?? "x", times);
    expect(ok).toBe(owns(m, this.attempt));
    if (ok) Object.assign(m, { state: "unknown", owner: undefined, settling: true });
    await checkInvariants(m, r);
  }
  toString = () => `MarkUnknown(${this.attempt})`;
}

class Release implements Cmd {
  constructor(
    readonly attempt: number,
    readonly withAnswer: boolean,
  ) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    const token = r.tokens.get(this.attempt) ?? "x";
    const ok = this.withAnswer
      ? await r.fx.store.release(r.key, token, answer("not stored"), HOLD_MS)
      : await r.fx.store.release(r.key, token);
    expect(ok).toBe(owns(m, this.attempt));
    if (ok) {
      if (this.withAnswer) Object.assign(m, { state: "released", owner: undefined, settling: false });
      else if (m.tookUnknown) Object.assign(m, { state: "unknown", owner: undefined });
      else Object.assign(m, initialModel(), { waiters: m.waiters });
    }
    await checkInvariants(m, r);
  }
  toString = () => `Release(${this.attempt}, answer=${this.withAnswer})`;
}

class Wait implements Cmd {
  check = (m: Readonly<Model>) => m.waiters < 3;
  async run(m: Model, r: Real): Promise<void> {
    const controller = new AbortController();
    const promise = r.fx.store.waitFor(r.key, controller.signal);
    promise.catch(() => {});
    r.waiters.push({ promise, controller });
    m.waiters++;
    await checkInvariants(m, r);
  }
  toString = () => "Wait";
}

/** A waiter whose deadline passes stops waiting at once, whatever the key does. */
class WaiterDeadline implements Cmd {
  check = (m: Readonly<Model>) => m.waiters > 0;
  async run(m: Model, r: Real): Promise<void> {
    for (const w of r.waiters.splice(0)) {
      w.controller.abort(new Error("deadline"));
      await expect(w.promise).rejects.toThrow("deadline");
    }
    m.waiters = 0;
    await checkInvariants(m, r);
  }
  toString = () => "WaiterDeadline";
}

class LeaseLapse implements Cmd {
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    await r.fx.leaseLapse(r.key);
    m.leaseAlive = false;
    await checkInvariants(m, r);
  }
  toString = () => "LeaseLapse";
}

class SettleElapse implements Cmd {
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    await r.fx.settleElapse(r.key);
    m.leaseAlive = false;
    m.settling = false;
    await checkInvariants(m, r);
  }
  toString = () => "SettleElapse";
}

class RecordExpire implements Cmd {
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    await r.fx.recordExpire(r.key);
    const v = visible(m);
    const kept = { waiters: m.waiters };
    // An unknown record is kept a TTL past its end so that a begin can report it; then it goes.
    if (v === "unknown" || v === "in_flight") {
      Object.assign(m, initialModel(), kept, { state: "expired", fingerprint: m.fingerprint });
    } else Object.assign(m, initialModel(), kept);
    await checkInvariants(m, r);
  }
  toString = () => "RecordExpire";
}

class ClockStep implements Cmd {
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    await r.fx.clockStep();
    await checkInvariants(m, r);
  }
  toString = () => "ClockStep";
}

const attempt = fc.integer({ min: 0, max: 2 });

/** Commands of several attempts on one key, interleaved with faults and the passing of time. */
export const stateMachineCommands = fc.commands(
  [
    fc
      .tuple(attempt, fc.constantFrom("A", "B"), fc.boolean(), fc.boolean())
      .map(([a, fp, t, lost]) => new Begin(a, fp, t, lost)),
    attempt.map((a) => new Extend(a)),
    attempt.map((a) => new Complete(a)),
    attempt.map((a) => new MarkUnknown(a)),
    fc.tuple(attempt, fc.boolean()).map(([a, w]) => new Release(a, w)),
    fc.constant(new Wait()),
    fc.constant(new WaiterDeadline()),
    fc.constant(new LeaseLapse()),
    fc.constant(new SettleElapse()),
    fc.constant(new RecordExpire()),
    fc.constant(new ClockStep()),
  ],
  { maxCommands: 40 },
);

let runs = 0;
/** Runs the model against a store; each run on a fresh key. */
export async function runStateMachine(fx: ModelFixture, numRuns: number, prefix: string): Promise<void> {
  await fc.assert(
    fc.asyncProperty(stateMachineCommands, async (cmds) => {
      const real: Real = { fx, key: `${prefix}-${runs++}`, tokens: new Map(), waiters: [], last: "free" };
      await fc.asyncModelRun(() => ({ model: initialModel(), real }), cmds);
      for (const w of real.waiters) w.controller.abort(new Error("end of run"));
    }),
    { numRuns },
  );
}

/**
 * The parts of a fixture for a store on a server's clock (Redis, PostgreSQL): this process's wall
 * clock steps by an hour, which the server's leases must not notice; a waiter counts as settled once
 * it answers within 2 s (the server wakes it by a message, or its poll does).
 */
export function onServerClock(): Pick<ModelFixture, "clockStep" | "settled"> {
  const hour = 3_600_000;
  return {
    clockStep: async () => {
      vi.useFakeTimers({ toFake: ["Date"] });
      vi.setSystemTime(Date.now() + (Math.random() < 0.5 ? hour : -hour));
      vi.useRealTimers();
    },
    settled: async (waiter) => {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), 2_000);
      });
      try {
        return await Promise.race([
          waiter.then(
            () => true,
            () => true,
          ),
          late,
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
