import { describe, expect, it } from "vitest";
import {
  connectionCap,
  connectionCapWarning,
  describeCap,
  FALLBACK_CAP,
  FD_RESERVE,
  openFileLimit,
} from "../../../src/gateway/connection-cap.js";

const limits = (soft: string, hard: string) =>
  [
    "Limit                     Soft Limit           Hard Limit           Units     ",
    "Max processes             63704                63704                processes ",
    `Max open files            ${soft.padEnd(21)}${hard.padEnd(21)}files     `,
    "Max locked memory         8388608              8388608              bytes     ",
  ].join("\n");

describe("openFileLimit", () => {
  it("reads the soft limit on open files from /proc/self/limits", () => {
    expect(openFileLimit(limits("20000", "40000"))).toBe(20_000);
    expect(openFileLimit(limits("unlimited", "unlimited"))).toBe(Number.POSITIVE_INFINITY);
  });

  it("is undefined where there is nothing to read", () => {
    expect(openFileLimit("")).toBeUndefined();
    expect(openFileLimit(limits("lots", "lots"))).toBeUndefined();
  });

  it("reads this process's own limit where /proc is mounted", () => {
    expect(openFileLimit()).toBeGreaterThan(0);
  });
});

describe("connectionCap", () => {
  it("auto keeps the upstream pool and the reserve under the open-file limit", () => {
    expect(connectionCap("auto", 128, 20_000)).toEqual({
      setting: "auto",
      cap: 20_000 - 128 - FD_RESERVE,
      fileLimit: 20_000,
      reserved: 128 + FD_RESERVE,
    });
    // Ten thousand waiting duplicates fit under a common limit, with room for anything else connecting.
    expect(connectionCap("auto", 128, 65_536).cap).toBeGreaterThan(10_000);
  });

  it("auto is at least one connection, unbounded without a limit, the old cap where the limit is unknown", () => {
    expect(connectionCap("auto", 128, 100).cap).toBe(1);
    expect(connectionCap("auto", 128, Number.POSITIVE_INFINITY).cap).toBe(Number.POSITIVE_INFINITY);
    expect(connectionCap("auto", 128, undefined).cap).toBe(FALLBACK_CAP);
  });

  it("a number is taken as it is", () => {
    expect(connectionCap(50, 128, 20_000).cap).toBe(50);
    expect(connectionCap(50_000, 128, 20_000).cap).toBe(50_000);
  });
});

describe("connectionCapWarning", () => {
  it("warns of a number that leaves no descriptors for the upstream and the store", () => {
    const w = connectionCapWarning(connectionCap(20_000, 128, 20_000));
    expect(w).toContain("listen.maxConnections: 20000 leaves fewer than 384 of the 20000 open files");
    expect(connectionCapWarning(connectionCap(5_000, 128, 20_000))).toBeUndefined();
  });

  it("warns when auto comes to few connections, and says how to get more", () => {
    expect(connectionCapWarning(connectionCap("auto", 128, 1_024))).toContain(
      "auto comes to 640 client connections under an open-file limit of 1024; raise the limit",
    );
    expect(connectionCapWarning(connectionCap("auto", 128, 65_536))).toBeUndefined();
    expect(connectionCapWarning(connectionCap("auto", 128, undefined))).toBeUndefined();
  });
});

describe("describeCap", () => {
  it("shows what auto came from", () => {
    expect(describeCap(connectionCap("auto", 128, 20_000))).toBe(
      "listen.maxConnections: 19616 (auto: open-file limit 20000, less 128 upstream connections and 256 kept for the store, logs and admin)",
    );
    expect(describeCap(connectionCap(300, 128, 20_000))).toBe("listen.maxConnections: 300");
    expect(describeCap(connectionCap("auto", 8, Number.POSITIVE_INFINITY))).toContain("no cap");
  });
});
