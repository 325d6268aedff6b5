export { type ErrorBodyShape, type ErrorValues, renderTemplate } from "./error-body.js";
export {
  envOverrides,
  formatPath,
  loadConfig,
  type Overrides,
  parseConfig,
  parseConfigText,
} from "./load.js";
export {
  type CompiledRoute,
  cachePredicate,
  FALLBACK_ROUTE_NAME,
  NEVER_CACHED_BY_CLASS,
  type RouteMatch,
  type RouteSettings,
  RouteTable,
} from "./routes.js";
export { type Config, DEFAULT_LOG_BUFFER, type FingerprintPart, type ReconcileRule } from "./schema.js";
export { parsePointer, parseSource, parseTemplate, type Source, type Template } from "./sources.js";
export { parseDuration, parseSize } from "./units.js";
export { configWarnings } from "./warnings.js";
