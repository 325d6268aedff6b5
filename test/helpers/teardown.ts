import { afterEach } from "vitest";

interface Closable {
  close(): Promise<unknown>;
}

/**
 * Registers an afterEach that closes what each test started, last started first (a gateway before
 * the backend behind it), and returns the function that registers a thing: `use(await start())`.
 */
export function closeAfterEach(): <T extends Closable>(thing: T) => T {
  const open: Closable[] = [];
  afterEach(async () => {
    for (const thing of open.splice(0).reverse()) await thing.close();
  });
  return (thing) => {
    open.push(thing);
    return thing;
  };
}
