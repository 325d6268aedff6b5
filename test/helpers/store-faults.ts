import { StoreUnavailableError } from "../../src/errors.js";
import type { IdempotencyStore } from "../../src/store/index.js";

type Op = "get" | "begin" | "extend" | "complete" | "markUnknown" | "release";

/**
 * A real store behind a wrapper that can lose the reply of its next call: the call runs on the
 * store and takes effect, but the caller is told the store did not answer, as when a Redis reply
 * times out on the client after the script ran.
 */
export function loseReplies(inner: IdempotencyStore): {
  store: IdempotencyStore;
  loseNext(op: Op): void;
  /** The next `times` calls of `op` fail without reaching the store (it is unreachable). */
  failNext(op: Op, times: number): void;
  lastKey(op: Op): string | undefined;
  calls(op: Op): number;
} {
  const toLose = new Set<Op>();
  const toFail = new Map<Op, number>();
  const keys = new Map<Op, string>();
  const counts = new Map<Op, number>();
  const store = new Proxy(inner, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (typeof value !== "function") return value;
      return async (...args: unknown[]) => {
        const op = prop as Op;
        if (typeof args[0] === "string") keys.set(op, args[0]);
        counts.set(op, (counts.get(op) ?? 0) + 1);
        const failing = toFail.get(op) ?? 0;
        if (failing > 0) {
          toFail.set(op, failing - 1);
          throw new StoreUnavailableError(`${op}: unreachable (injected)`);
        }
        const result = await value.apply(target, args);
        if (toLose.delete(op)) throw new StoreUnavailableError(`${op}: reply lost (injected)`);
        return result;
      };
    },
  });
  return {
    store,
    loseNext: (op) => toLose.add(op),
    failNext: (op, times) => toFail.set(op, times),
    lastKey: (op) => keys.get(op),
    calls: (op) => counts.get(op) ?? 0,
  };
}
