export { type ClientInfo, flatten, responseHeaderPairs, upstreamRequestHeaders } from "./headers.js";
export { classifyUpstreamError, type OutboundRequest, Upstream, type UpstreamOptions } from "./upstream.js";
