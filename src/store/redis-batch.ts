import type { Redis } from "ioredis";

/**
 * Sends the store commands of one turn of the event loop in one write. Requests that arrive together
 * (one poll of the sockets) issue their begins and completions together: corking the connection
 * until setImmediate, which runs after that poll, puts them in one writev, and Redis reads them in
 * one read. Replies still come one by one, in order, to each command's promise.
 *
 * This is what ioredis's auto-pipelining does too, but that builds a Pipeline, its promises and a
 * second set of callbacks for every batch: about a fifth of a first attempt's time in the gateway.
 * Nothing is reordered: the connection keeps the order of writes whether corked or not.
 */
export class WriteBatch {
  private corked = false;

  constructor(private readonly client: Redis) {}

  /** Called before a command is sent: the first of a turn corks the connection until the next. */
  join(): void {
    if (this.corked) return;
    // On reconnect ioredis makes a new stream: the one corked here is the one uncorked.
    const stream = this.client.stream;
    if (!stream?.writable) return;
    stream.cork();
    this.corked = true;
    setImmediate(() => {
      this.corked = false;
      stream.uncork();
    });
  }
}
