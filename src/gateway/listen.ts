import type { Server } from "node:net";

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
 * Resolves once `server` listens, or rejects with a ListenError naming `setting`: a port in use must
 * be one line on the command line, not an unhandled 'error' event and a stack trace.
 */
export function listening<T>(
  server: Server,
  setting: string,
  address: string,
  ready: Promise<T>,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => reject(new ListenError(setting, address, err));
    server.once("error", onError);
    ready.then((value) => {
      server.off("error", onError);
      resolve(value);
    }, reject);
  });
}
