import { BlockList, isIP } from "node:net";

/** The peers whose forwarding headers are believed (trustProxy.addresses). */
export class TrustedProxies {
  private readonly list = new BlockList();
  readonly any: boolean;

  constructor(addresses: readonly string[]) {
    this.any = addresses.length > 0;
    for (const entry of addresses) {
      const [address = "", prefix] = entry.split("/");
      const type = isIP(address) === 6 ? "ipv6" : "ipv4";
      if (prefix === undefined) this.list.addAddress(address, type);
      else this.list.addSubnet(address, Number(prefix), type);
    }
  }

  /** Whether a connection from this address comes from a trusted proxy. */
  trusts(address: string | undefined): boolean {
    if (!this.any || !address) return false;
    // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    if (mapped) return this.list.check(mapped[1] as string, "ipv4");
    return this.list.check(address, isIP(address) === 6 ? "ipv6" : "ipv4");
  }
}
