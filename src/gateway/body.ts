import type { IncomingMessage } from "node:http";
import { BodyTooLargeError, GatewayError } from "../errors.js";

export class ClientAbortedError extends GatewayError {
  constructor() {
    super(
      "CLIENT_ABORTED",
      400,
      "Client aborted",
      "the client closed the connection before sending the whole body",
    );
  }
}

/** Reads a request body into memory, refusing more than `limit` bytes (declared or actually sent). */
export function readBody(incoming: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(incoming.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(new BodyTooLargeError(limit));
  if (incoming.readableEnded) return Promise.resolve(Buffer.alloc(0));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (err?: Error) => {
      incoming.off("data", onData);
      incoming.off("end", onEnd);
      incoming.off("error", onError);
      incoming.off("close", onClose);
      if (err) reject(err);
      else resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size));
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) done(new BodyTooLargeError(limit));
      else chunks.push(chunk);
    };
    const onEnd = () => done();
    const onError = () => done(new ClientAbortedError());
    const onClose = () => {
      if (!incoming.readableEnded) done(new ClientAbortedError());
    };
    incoming.on("data", onData);
    incoming.on("end", onEnd);
    incoming.on("error", onError);
    incoming.on("close", onClose);
  });
}
