export {
  type DemoBackendOptions,
  type DemoStats,
  type RunningDemoBackend,
  startDemoBackend,
} from "./backend.js";
