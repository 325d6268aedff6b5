import { describe, expect, it } from "vitest";
import { freePorts, listenOn } from "../../helpers/redis.js";

const bindable = async (port: number) => {
  const server = await listenOn(port);
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  return server !== undefined;
};

describe("freePorts", () => {
  // Ports chosen one by one, each released before the next, repeat within a few hundred: the kernel
  // may hand back the port it has just taken back. A cluster of six then put two nodes on one port.
  it("never gives one port twice", async () => {
    const ports = await freePorts(400);
    expect(new Set(ports).size).toBe(400);
  });

  it("gives ports whose companions were free, none of them another's port", async () => {
    const ports = await freePorts(50, (port) => port + 10000);
    for (const port of ports) {
      expect(port + 10000).toBeLessThanOrEqual(65535);
      expect(ports).not.toContain(port + 10000);
      expect(await bindable(port + 10000)).toBe(true);
    }
  });
});
