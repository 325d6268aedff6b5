export { formatReports } from "./report.js";
export { render, runStorm } from "./run.js";
export { type BackendStats, DEFAULT_BODY, Pattern, type StormOptions, type StormReport } from "./types.js";
