export { createApp, type GatewayDeps } from "./app.js";
export { PROBLEM_TYPE_PREFIX, toProblem } from "./problem.js";
export { createLogger, type RunningGateway, type StartOptions, startGateway } from "./server.js";
export { type ClusterHandle, runPrimary, runWorker } from "./workers.js";
