export { createApp, type GatewayDeps } from "./app.js";
export { configuredCap, connectionCapWarning, describeCap } from "./connection-cap.js";
export { createLogger, logWritten } from "./logger.js";
export { PROBLEM_TYPE_PREFIX, toProblem } from "./problem.js";
export { type RunningGateway, type StartOptions, startGateway } from "./server.js";
export { type ClusterHandle, runPrimary, runWorker } from "./workers.js";
