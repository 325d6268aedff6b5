export { formatReports } from "./report.js";
export { DEFAULT_BODY, render, runStorm } from "./run.js";
export { type BackendStats, Pattern, type StormOptions, type StormReport } from "./types.js";
