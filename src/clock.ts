/**
 * The process's clock for leases, deadlines and expiry: monotonic, so that a wall-clock step (NTP,
 * an operator's `date -s`) neither expires every lease at once nor keeps one alive. Read through
 * `performance` at every call, so that fake timers in tests drive it. Its values are milliseconds
 * that start near the epoch, which keeps logs readable; only differences are meaningful.
 */
export function monotonicNow(): number {
  return performance.timeOrigin + performance.now();
}
