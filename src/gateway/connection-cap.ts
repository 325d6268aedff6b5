import { readFileSync } from "node:fs";

/**
 * File descriptors kept back from client connections for everything else the gateway opens: store
 * connections (a Redis Cluster opens one per node, twice), the admin listener and its clients, log
 * and spool files, the workers' IPC channels.
 */
export const FD_RESERVE = 256;

/** Used where the open-file limit cannot be read (not Linux): the cap of earlier releases. */
export const FALLBACK_CAP = 10_000;

/**
 * The soft limit on open files, as Linux reports it in /proc/self/limits: Infinity when unlimited,
 * undefined where it cannot be read. Node raises the soft limit to the hard one as it starts, so in
 * the gateway's own process this is the hard limit.
 */
export function openFileLimit(limitsText: string | undefined = readLimits()): number | undefined {
  const line = limitsText?.split("\n").find((l) => l.startsWith("Max open files"));
  const soft = line?.slice("Max open files".length).trim().split(/\s+/)[0];
  if (soft === "unlimited") return Number.POSITIVE_INFINITY;
  const n = Number(soft);
  return soft && Number.isInteger(n) && n > 0 ? n : undefined;
}

function readLimits(): string | undefined {
  try {
    return readFileSync("/proc/self/limits", "utf8");
  } catch {
    return undefined;
  }
}

export interface ConnectionCap {
  /** listen.maxConnections as configured. */
  setting: number | "auto";
  /** Client connections accepted at once. */
  cap: number;
  /** This process's open-file limit; undefined where it cannot be read. */
  fileLimit: number | undefined;
  /** Descriptors kept back from clients: the upstream pool and FD_RESERVE. */
  reserved: number;
}

/**
 * What `listen.maxConnections` comes to. `auto` leaves the upstream pool and FD_RESERVE room under
 * the open-file limit: a client connection beyond it would not fail by itself, it would take the
 * descriptor the next upstream or store connection needs, and a first attempt would fail instead.
 */
export function connectionCap(
  setting: number | "auto",
  upstreamConnections: number,
  fileLimit: number | undefined,
): ConnectionCap {
  const reserved = upstreamConnections + FD_RESERVE;
  if (setting !== "auto") return { setting, cap: setting, fileLimit, reserved };
  if (fileLimit === undefined) return { setting, cap: FALLBACK_CAP, fileLimit, reserved };
  return { setting, cap: Math.max(1, fileLimit - reserved), fileLimit, reserved };
}

/** The cap of a config in this process. */
export function configuredCap(config: {
  listen: { maxConnections: number | "auto" };
  upstream: { connections: number };
}): ConnectionCap {
  return connectionCap(config.listen.maxConnections, config.upstream.connections, openFileLimit());
}

/** A warning when the cap leaves the gateway short of descriptors, or of clients; none when fine. */
export function connectionCapWarning(c: ConnectionCap): string | undefined {
  const { setting, fileLimit: limit } = c;
  if (limit === undefined || limit === Number.POSITIVE_INFINITY) return undefined;
  if (setting !== "auto" && setting > limit - c.reserved) {
    return (
      `listen.maxConnections: ${setting} leaves fewer than ${c.reserved} of the ${limit} open files this process may ` +
      "have for the upstream, the store and logs: with that many clients connected, a first attempt fails for want " +
      "of a descriptor; use auto, or raise the limit (ulimit -n, LimitNOFILE)"
    );
  }
  if (setting === "auto" && c.cap < 1_000) {
    return (
      `listen.maxConnections: auto comes to ${c.cap} client connections under an open-file limit of ${limit}; ` +
      "raise the limit (ulimit -n, LimitNOFILE) for more"
    );
  }
  return undefined;
}

/** How check-config shows the cap: the number, and for `auto` what it came from. */
export function describeCap(c: ConnectionCap): string {
  if (c.setting !== "auto") return `listen.maxConnections: ${c.cap}`;
  if (c.fileLimit === undefined) {
    return `listen.maxConnections: ${c.cap} (auto: the open-file limit cannot be read here)`;
  }
  if (c.fileLimit === Number.POSITIVE_INFINITY) {
    return "listen.maxConnections: no cap (auto: open files are unlimited)";
  }
  return (
    `listen.maxConnections: ${c.cap} (auto: open-file limit ${c.fileLimit}, less ${c.reserved - FD_RESERVE} ` +
    `upstream connections and ${FD_RESERVE} kept for the store, logs and admin)`
  );
}
