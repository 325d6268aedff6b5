import type { AddressInfo, Server } from "node:net";

/** A listener could not be opened; the message names the setting that chooses its address. */
export class ListenError extends Error {
  constructor(
    readonly setting: string,
    readonly address: string,
    cause: NodeJS.ErrnoException,
  ) {
    const why =
      cause.code === "EADDRINUSE"
        ? "is in use"
        : cause.code === "EACCES"
          ? "needs privileges this process does not have"
          : cause.code === "EADDRNOTAVAIL"
            ? "is not an address of this machine"
            : `cannot be opened (${cause.code ?? cause.message})`;
    super(`${address} ${why}: choose another with ${setting}`, { cause });
    this.name = "ListenError";
  }
}

/**
 * Resolves with the address once `server` listens, or rejects with a ListenError naming `setting`:
 * a port in use must be one line on the command line, not an unhandled 'error' event and a stack.
 */
export function listening(server: Server, setting: string, address: string): Promise<AddressInfo> {
  return new Promise<AddressInfo>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.off("listening", onListening);
      reject(new ListenError(setting, address, err));
    };
    const onListening = () => {
      server.off("error", onError);
      resolve(server.address() as AddressInfo);
    };
    server.once("error", onError);
    server.once("listening", onListening);
  });
}
