import { RecordState, type StoredRecord, type StoredResponse } from "./types.js";

/** A record as a shared store's server answers it: its fields, the view it took, and its clock. */
export interface ServerRecord {
  /** in_flight, completed, released or unknown (anything else reads as unknown). */
  view: string;
  fingerprint: string;
  createdAt: number;
  /** The record's end, on the server's clock. */
  expires: number;
  /** The server's clock when it answered. */
  serverNow: number;
  attempts?: number | undefined;
  status: number;
  /** The stored headers, as JSON. */
  headers: string | null;
  body: Buffer | null;
  reconciled: boolean;
  settleMs: number;
}

/** The StoredRecord of a server's answer (Redis or PostgreSQL), its end shown on this process's clock. */
export function storedRecord(r: ServerRecord): StoredRecord {
  const base = {
    fingerprint: r.fingerprint,
    createdAt: r.createdAt,
    expiresAt: Date.now() + (r.expires - r.serverNow),
    ...(r.attempts ? { attempts: r.attempts } : {}),
  };
  const response = (): StoredResponse => ({
    status: r.status,
    headers: JSON.parse(String(r.headers)) as [string, string][],
    body: r.body ?? Buffer.alloc(0),
    ...(r.reconciled ? { reconciled: true } : {}),
  });
  switch (r.view) {
    case RecordState.Completed:
      return { ...base, state: RecordState.Completed, response: response() };
    case RecordState.Released:
      return { ...base, state: RecordState.Released, response: r.status > 0 ? response() : undefined };
    case RecordState.InFlight:
      return { ...base, state: RecordState.InFlight };
    default:
      return { ...base, state: RecordState.Unknown, settlesInMs: r.settleMs };
  }
}
