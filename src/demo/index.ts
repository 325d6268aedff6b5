export {
  type DemoBackendOptions,
  type DemoStats,
  type Invoice,
  type RunningDemoBackend,
  startDemoBackend,
} from "./backend.js";
