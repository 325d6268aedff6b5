import {
  AttemptNotStoredError,
  BodyTooLargeError,
  InFlightError,
  InvalidBodyError,
  InvalidKeyError,
  InvalidKeyFieldError,
  KeyReusedError,
  MissingFieldError,
  MissingKeyError,
  OutcomeUnknownError,
  ResponseTooLargeError,
  UpstreamOutcomeUnknownError,
} from "../errors.js";
import { Outcome } from "../idempotency/index.js";

/** How a protected request ended, as logs, metrics and the attempt log name it. */
export const RequestOutcome = {
  Executed: "executed",
  /** Forwarded although an earlier request with the key may have executed (see Outcome.Reexecuted). */
  Reexecuted: "reexecuted",
  Replayed: "replayed",
  Waited: "waited",
  Reconciled: "reconciled",
  /** 409: a duplicate of an attempt still in flight. */
  Conflict: "conflict",
  /** 422: the key was reused with another payload. */
  Mismatch: "mismatch",
  /** 400 or 413: the request itself was refused. */
  Rejected: "rejected",
  /** 504 or 409, or an upstream status in unknownOn: the outcome of an attempt is not known. */
  Unknown: "unknown",
  /** Forwarded without protection because the store was unreachable (failMode: open). */
  Unprotected: "unprotected",
  /** Not protected (its method is not), passed through on a route that protects others. */
  Passed: "passed",
  Error: "error",
} as const;
export type RequestOutcome = (typeof RequestOutcome)[keyof typeof RequestOutcome];

/** One protected request, told once to every observer (log line, metrics, attempt log). */
export interface RequestEvent {
  time: number;
  requestId: string;
  route: string;
  method: string;
  path: string;
  /** The stored key's hash; absent when no key could be derived. */
  storeKey?: string | undefined;
  /** The key material as the operator knows it (header value or business fields). */
  material?: readonly unknown[] | undefined;
  /** Whether the material is the key header's value or the route's key fields. */
  keyKind?: "header" | "derived" | undefined;
  scope?: readonly unknown[] | undefined;
  /** Hash of the caller's identity values, never the credential. */
  identity?: string | undefined;
  outcome: RequestOutcome;
  status: number;
  /** Time spent waiting on the upstream; undefined when it was not called. */
  upstreamMs?: number | undefined;
  totalMs: number;
  /** The error the gateway answered with, if any. */
  errorCode?: string | undefined;
  /** The request body, only with audit.payloads: true. */
  payload?: string | undefined;
}

export type Observer = (event: RequestEvent) => void;

export function outcomeOfResult(outcome: Outcome): RequestOutcome {
  switch (outcome) {
    case Outcome.Replayed:
      return RequestOutcome.Replayed;
    case Outcome.Waited:
      return RequestOutcome.Waited;
    case Outcome.Reconciled:
      return RequestOutcome.Reconciled;
    case Outcome.Reexecuted:
      return RequestOutcome.Reexecuted;
    case Outcome.AnsweredUnknown:
      return RequestOutcome.Unknown;
    default:
      return RequestOutcome.Executed;
  }
}

export function outcomeOfError(err: unknown): RequestOutcome {
  if (err instanceof KeyReusedError) return RequestOutcome.Mismatch;
  if (err instanceof InFlightError || err instanceof AttemptNotStoredError) return RequestOutcome.Conflict;
  if (
    err instanceof OutcomeUnknownError ||
    err instanceof UpstreamOutcomeUnknownError ||
    err instanceof ResponseTooLargeError
  )
    return RequestOutcome.Unknown;
  if (
    err instanceof InvalidKeyError ||
    err instanceof MissingKeyError ||
    err instanceof MissingFieldError ||
    err instanceof InvalidBodyError ||
    err instanceof InvalidKeyFieldError ||
    err instanceof BodyTooLargeError
  ) {
    return RequestOutcome.Rejected;
  }
  return RequestOutcome.Error;
}
