import type pg from "pg";
import type { IdempotencyStore } from "../../src/store/index.js";
import { type ModelFixture, onServerClock } from "./state-model.js";

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
    ...onServerClock(),
  };
}
