import type pg from "pg";
import { vi } from "vitest";
import type { IdempotencyStore } from "../../src/store/index.js";
import type { ModelFixture } from "./state-model.js";

const HOUR = 3_600_000;

/**
 * The state-machine model on the PostgreSQL store. Leases, settle times and expiry are decided by
 * the database's clock; the model's time passes by making them run out, key by key, in the row.
 */
export function postgresModelFixture(store: IdempotencyStore, sql: pg.Pool): ModelFixture {
  return {
    store,
    leaseLapse: async (key) => {
      await sql.query(
        "UPDATE idempotency_records SET lease_token = NULL, lease_until = NULL WHERE key = $1",
        [key],
      );
    },
    settleElapse: async (key) => {
      await sql.query(
        "UPDATE idempotency_records SET lease_token = NULL, lease_until = NULL, settle_until = NULL WHERE key = $1",
        [key],
      );
    },
    recordExpire: async (key) => {
      const { rows } = await sql.query<{ state: string; expires: string }>(
        "SELECT state, expires FROM idempotency_records WHERE key = $1 AND purge_at > idem_now() AND state <> 'free'",
        [key],
      );
      const row = rows[0];
      const counts = row?.state === "unknown" || row?.state === "in_flight";
      // Past its logical end a record that must be reported is kept; a second step drops it.
      if (row && counts && row.expires !== "0") {
        await sql.query(
          "UPDATE idempotency_records SET expires = 0, lease_token = NULL, lease_until = NULL, settle_until = NULL WHERE key = $1",
          [key],
        );
      } else {
        await sql.query("DELETE FROM idempotency_records WHERE key = $1", [key]);
      }
    },
    clockStep: async () => {
      vi.useFakeTimers({ toFake: ["Date"] });
      vi.setSystemTime(Date.now() + (Math.random() < 0.5 ? HOUR : -HOUR));
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
