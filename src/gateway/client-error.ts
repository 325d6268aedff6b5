import { type ServerResponse, STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import type { Logger } from "pino";
import {
  type GatewayError,
  HeadersTooLargeError,
  MalformedRequestError,
  RequestTimeoutError,
} from "../errors.js";
import { newId } from "../ids.js";
import { toProblem } from "./problem.js";

type ClientError = Error & { code?: string; reason?: string };

function gatewayErrorFor(err: ClientError): GatewayError {
  switch (err.code) {
    case "HPE_HEADER_OVERFLOW":
      return new HeadersTooLargeError();
    case "ERR_HTTP_REQUEST_TIMEOUT":
      return new RequestTimeoutError();
    default:
      // llhttp's reason ("Invalid header token"), never the bytes themselves.
      return new MalformedRequestError(err.reason ?? err.code ?? "unreadable");
  }
}

/**
 * Node's `clientError`: a request its HTTP parser refused, or one that did not arrive in time. Node's
 * own answer is a bare status line; this one is problem details with a request id, logged under that
 * id, so that a caller's report of it can be found. Nothing is written where an answer has begun
 * (Node's rule), and the connection is closed either way: what follows on it cannot be trusted.
 */
export function answerClientError(err: ClientError, socket: Socket, logger: Logger): void {
  // Node's own field, read as its default handler reads it: the answer under way on this connection.
  const inFlight = (socket as Socket & { _httpMessage?: ServerResponse })._httpMessage;
  if (err.code === "ECONNRESET" || !socket.writable || inFlight?.headersSent) {
    socket.destroy();
    return;
  }
  const requestId = newId();
  const problem = toProblem(gatewayErrorFor(err), { requestId });
  logger.info(
    { requestId, status: problem.status, reason: err.reason ?? err.code },
    "request refused before it could be read",
  );
  const head = [
    `HTTP/1.1 ${problem.status} ${STATUS_CODES[problem.status]}`,
    ...Object.entries(problem.headers).map(([name, value]) => `${name}: ${value}`),
    `content-length: ${Buffer.byteLength(problem.body)}`,
    "connection: close",
  ];
  socket.end(`${head.join("\r\n")}\r\n\r\n${problem.body}`, () => socket.destroy());
}
