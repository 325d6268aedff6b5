export {
  type ClientInfo,
  flatHeaders,
  responseHeaderPairs,
  upstreamRequestHeaders,
} from "./headers.js";
export { InvalidTargetError, normalizeTarget, type Target } from "./target.js";
export { TrustedProxies } from "./trust.js";
export { classifyUpstreamError, type OutboundRequest, Upstream, type UpstreamOptions } from "./upstream.js";
export { warmHttpParser } from "./warm-parser.js";
