/**
 * The engine's timing-dependent paths, on fake timers (the engine's and the memory store's clocks are
 * both monotonic, both driven by them): deadlines, settle times, lease extension, and the background
 * undo of a lost begin. The store is the real memory store, with faults scripted where needed.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { parseConfig, type RouteSettings, RouteTable } from "../../../src/config/index.js";
import { InFlightError, OutcomeUnknownError, StoreUnavailableError } from "../../../src/errors.js";
import { IdempotencyEngine } from "../../../src/idempotency/index.js";
import { MemoryStore, RecordState, type StoredResponse } from "../../../src/store/index.js";
import { loseReplies } from "../../helpers/store-faults.js";

function settings(route: Record<string, unknown> = {}, timeout = "5s"): RouteSettings {
  const config = parseConfig({
    upstream: { url: "http://127.0.0.1:1", timeout },
    routes: [{ name: "r", match: { path: "/r" }, ...route }],
  });
  return new RouteTable(config).routes[0]?.settings as RouteSettings;
}

const ok = (body: string): StoredResponse => ({ status: 201, headers: [], body: Buffer.from(body) });
const notFound: StoredResponse = { status: 404, headers: [], body: Buffer.from("") };
const found: StoredResponse = { status: 200, headers: [], body: Buffer.from("[the invoice]") };

/** A forward that never answers until told to; counts its calls. */
function heldForward() {
  let calls = 0;
  let answer: (r: StoredResponse) => void = () => {};
  let fail: (e: Error) => void = () => {};
  return {
    forward: () => {
      calls++;
      return new Promise<StoredResponse>((resolve, reject) => {
        answer = resolve;
        fail = reject;
      });
    },
    calls: () => calls,
    answer: (r: StoredResponse) => answer(r),
    fail: (e: Error) => fail(e),
  };
}

let store: MemoryStore;
beforeEach(() => {
  vi.useFakeTimers();
  store = new MemoryStore();
});
afterEach(async () => {
  await store.close();
  vi.useRealTimers();
});

describe("engine on an injected clock", () => {
  it("drain waits for every attempt under way, and gives up at its timeout", async () => {
    const s = settings();
    const engine = new IdempotencyEngine(store);
    expect(await engine.drain(1_000)).toBe(true);
    const a = heldForward();
    const b = heldForward();
    const first = engine.handle(s, "a", "fp", a.forward);
    const second = engine.handle(s, "b", "fp", b.forward);
    await vi.advanceTimersByTimeAsync(0);
    expect(engine.activeAttempts).toBe(2);
    const timedOut = engine.drain(1_000);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(await timedOut).toBe(false);
    const drained = engine.drain(60_000);
    let ended = false;
    void drained.then(() => {
      ended = true;
    });
    a.answer(ok("a"));
    await first;
    await vi.advanceTimersByTimeAsync(0);
    expect(ended).toBe(false);
    expect(engine.activeAttempts).toBe(1);
    b.answer(ok("b"));
    await second;
    expect(await drained).toBe(true);
    expect(engine.activeAttempts).toBe(0);
  });

  it("a waiter never outlives its deadline, however long the attempt keeps its lease", async () => {
    const s = settings({ waitTimeout: "2s", lockTtl: "300ms" });
    const engine = new IdempotencyEngine(store);
    const held = heldForward();
    const first = engine.handle(s, "k", "fp", held.forward);
    const waiter = engine.handle(s, "k", "fp", held.forward);
    const outcome = waiter.catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(1_999);
    expect(engine.waitingDuplicates).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(await outcome).toBeInstanceOf(InFlightError);
    // The attempt kept its lease all along (extended every 100 ms) and still owns the key.
    expect((await store.get("k"))?.state).toBe(RecordState.InFlight);
    held.answer(ok("done"));
    await expect(first).resolves.toMatchObject({ outcome: "executed" });
    expect(held.calls()).toBe(1);
  });

  it("a wall-clock step neither ends a lease nor a wait", async () => {
    const s = settings({ waitTimeout: "10s", lockTtl: "1s" });
    const engine = new IdempotencyEngine(store);
    const held = heldForward();
    const first = engine.handle(s, "k", "fp", held.forward);
    const waiter = engine.handle(s, "k", "fp", held.forward);
    vi.setSystemTime(Date.now() + 3_600_000);
    await vi.advanceTimersByTimeAsync(500);
    expect((await store.get("k"))?.state).toBe(RecordState.InFlight);
    expect(engine.waitingDuplicates).toBe(1);
    held.answer(ok("once"));
    await first;
    await expect(waiter).resolves.toMatchObject({ outcome: "waited" });
    expect(held.calls()).toBe(1);
  });

  it("reconcile trusts notFound only after the settle time, and tells the time left until then", async () => {
    const s = settings(
      { onUnknown: "reconcile", reconcile: { probe: { path: "/p" }, settle: "30s" } },
      "10s",
    );
    const engine = new IdempotencyEngine(store);
    const held = heldForward();
    const first = engine.handle(s, "k", "fp", held.forward).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(0);
    held.fail(new Error("reset after sending"));
    await first;
    await vi.advanceTimersByTimeAsync(10_000);
    let probes = 0;
    const probe = async () => {
      probes++;
      return notFound;
    };
    const early = await engine.handle(s, "k", "fp", held.forward, probe).catch((e: unknown) => e);
    expect(early).toBeInstanceOf(OutcomeUnknownError);
    expect((early as OutcomeUnknownError).headers()).toEqual({ "retry-after": "20" });
    expect(held.calls()).toBe(1);
    expect((await store.get("k"))?.state).toBe(RecordState.Unknown);
    await vi.advanceTimersByTimeAsync(20_000);
    const late = engine.handle(s, "k", "fp", held.forward, probe);
    await vi.advanceTimersByTimeAsync(0);
    expect(held.calls()).toBe(2);
    held.answer(ok("second"));
    await expect(late).resolves.toMatchObject({ outcome: "reexecuted" });
    expect(probes).toBe(2);
  });

  it("reconcile trusts found at once, inside the settle time", async () => {
    const s = settings({ onUnknown: "reconcile", reconcile: { probe: { path: "/p" }, settle: "30s" } });
    const engine = new IdempotencyEngine(store);
    const held = heldForward();
    const first = engine.handle(s, "k", "fp", held.forward).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(0);
    held.fail(new Error("reset after sending"));
    await first;
    const result = await engine.handle(s, "k", "fp", held.forward, async () => found);
    expect(result).toMatchObject({ replayed: "reconciled", outcome: "reconciled" });
    expect(held.calls()).toBe(1);
  });

  it("an attempt that died is settled a settle time after its lease ran out", async () => {
    const s = settings({ onUnknown: "reconcile", reconcile: { probe: { path: "/p" }, settle: "30s" } });
    // A begin by a gateway that then died: its lease runs out unextended.
    await store.begin("k", {
      token: "dead",
      fingerprint: "fp",
      takeOverUnknown: false,
      leaseMs: s.lockTtlMs,
      ttlMs: s.ttlMs,
      settleMs: s.settleMs,
    });
    await vi.advanceTimersByTimeAsync(s.lockTtlMs + 29_000);
    const engine = new IdempotencyEngine(store);
    const early = await engine
      .handle(
        s,
        "k",
        "fp",
        async () => ok("x"),
        async () => notFound,
      )
      .catch((e) => e);
    expect((early as OutcomeUnknownError).headers()).toEqual({ "retry-after": "1" });
    await vi.advanceTimersByTimeAsync(1_000);
    await expect(
      engine.handle(
        s,
        "k",
        "fp",
        async () => ok("x"),
        async () => notFound,
      ),
    ).resolves.toMatchObject({
      outcome: "reexecuted",
    });
  });

  it("a begin whose reply was lost is undone in the background while the store stays unreachable", async () => {
    const s = settings({ lockTtl: "1s" });
    const faulty = loseReplies(store);
    const engine = new IdempotencyEngine(faulty.store);
    faulty.loseNext("begin");
    faulty.failNext("release", 3);
    await expect(engine.handle(s, "k", "fp", async () => ok("x"))).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    expect((await store.get("k"))?.state).toBe(RecordState.InFlight);
    // Three undo tries fail (one at once, two in the background), the fourth lands: before the lease
    // has even run out, and the key is free rather than unknown.
    await vi.advanceTimersByTimeAsync(1_500);
    expect(faulty.calls("release")).toBe(4);
    expect(await store.get("k")).toBeUndefined();
  });

  it("a copy that waited on an attempt ending unknown gets 409, not an execution of its own (onUnknown: retry)", async () => {
    const s = settings({ onUnknown: "retry", waitTimeout: "10s" });
    const engine = new IdempotencyEngine(store);
    const held = heldForward();
    const first = engine.handle(s, "k", "fp", held.forward).catch((e: unknown) => e);
    const copies = Array.from({ length: 5 }, () =>
      engine.handle(s, "k", "fp", held.forward).catch((e: unknown) => e),
    );
    await vi.advanceTimersByTimeAsync(0);
    held.fail(new Error("reset after sending"));
    await first;
    for (const c of await Promise.all(copies)) expect(c).toBeInstanceOf(OutcomeUnknownError);
    expect(held.calls()).toBe(1);
  });
});
