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
  lastKey(op: Op): string | undefined;
} {
  const toLose = new Set<Op>();
  const keys = new Map<Op, string>();
  const store = new Proxy(inner, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (typeof value !== "function") return value;
      return async (...args: unknown[]) => {
        const op = prop as Op;
        if (typeof args[0] === "string") keys.set(op, args[0]);
        const result = await value.apply(target, args);
        if (toLose.delete(op)) throw new StoreUnavailableError(`${op}: reply lost (injected)`);
        return result;
      };
    },
  });
  return {
    store,
    loseNext: (op) => toLose.add(op),
    lastKey: (op) => keys.get(op),
  };
}
