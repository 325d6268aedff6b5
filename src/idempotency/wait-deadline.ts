import type { WaitSignal } from "../store/types.js";

/** Why a wait ended at its deadline. */
export class WaitDeadlineReached extends Error {
  constructor() {
    super("the wait reached its deadline");
  }
}

/**
 * A wait's deadline as the stores' waits take it: one timer and one listener. An AbortController
 * with its timer holds about half a kilobyte more (an EventTarget, its listener map and records),
 * on every one of thousands of duplicates waiting for one slow request.
 */
export class WaitDeadline implements WaitSignal {
  aborted = false;
  reason: unknown;
  private listener: (() => void) | undefined;
  private readonly timer: NodeJS.Timeout;

  constructor(ms: number) {
    this.timer = setTimeout(reach, ms, this);
  }

  /** The deadline has come: the wait's listener is told. */
  reach(): void {
    this.aborted = true;
    this.reason = new WaitDeadlineReached();
    const listener = this.listener;
    this.listener = undefined;
    listener?.();
  }

  addEventListener(_type: "abort", listener: () => void): void {
    if (this.listener) throw new Error("a wait deadline has one listener");
    this.listener = listener;
  }

  removeEventListener(_type: "abort", listener: () => void): void {
    if (this.listener === listener) this.listener = undefined;
  }

  /** The wait ended otherwise: the timer is not needed. */
  clear(): void {
    clearTimeout(this.timer);
    this.listener = undefined;
  }
}

// A function of the module rather than a closure per deadline.
function reach(deadline: WaitDeadline): void {
  deadline.reach();
}
