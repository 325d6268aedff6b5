export { canonicalJson, sha256 } from "./canonical.js";
export {
  type EngineEvents,
  type EngineResult,
  type Forward,
  IdempotencyEngine,
  Outcome,
  type Probe,
} from "./engine.js";
export { type ExplainInput, type Explanation, explain } from "./explain.js";
export { parseIdempotencyKey } from "./key-header.js";
export {
  checkRequired,
  type DerivedKey,
  deriveKey,
  fingerprint,
  fingerprintParts,
  isProtected,
  storeKeyFor,
} from "./keys.js";
export { isMissing, RequestFields, type RequestView } from "./request.js";
