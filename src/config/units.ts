import { isIP } from "node:net";

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const SIZE_UNITS: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 };

function parseUnit(value: string, units: Record<string, number>): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$/i.exec(value);
  if (!m) return undefined;
  const factor = units[(m[2] as string).toLowerCase()];
  return factor === undefined ? undefined : Math.round(Number(m[1]) * factor);
}

/**
 * "10s" → 10000. A bare number is taken as milliseconds. Only whole milliseconds: leases and
 * expiries are set in whole milliseconds, and a fraction would be rounded away silently.
 */
/** "10.0.0.0/8", "::1", "192.168.1.10": an IP literal, optionally with a prefix length. */
export function isAddressOrSubnet(text: string): boolean {
  const [address = "", prefix, ...rest] = text.split("/");
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  const bits = Number(prefix);
  return /^\d+$/.test(prefix) && bits <= (family === 4 ? 32 : 128);
}

export function parseDuration(value: string | number): number | undefined {
  if (typeof value === "number") return Number.isInteger(value) && value >= 0 ? value : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$/i.exec(value);
  const factor = m ? DURATION_UNITS[(m[2] as string).toLowerCase()] : undefined;
  if (!m || factor === undefined) return undefined;
  const ms = Number(m[1]) * factor;
  // 1.5s is 1500 ms; 0.5ms is no whole number of milliseconds (allow for binary rounding of decimals).
  const whole = Math.round(ms);
  return Math.abs(ms - whole) < 1e-6 ? whole : undefined;
}

/** "1mb" → 1048576. A bare number is taken as bytes. */
export function parseSize(value: string | number): number | undefined {
  if (typeof value === "number") return Number.isInteger(value) && value >= 0 ? value : undefined;
  return parseUnit(value, SIZE_UNITS);
}
