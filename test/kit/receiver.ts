import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Webhook } from 'standardwebhooks';

/**
 * A webhook receiver on 127.0.0.1 for the delivery tests: every request is recorded with its
 * Standard Webhooks verdict (checked with the `standardwebhooks` package against each secret
 * given), and answered by a responder the test can change at any time (fail, 410, 429 with
 * Retry-After, redirect, answer slowly). `down()` closes the listening socket and every open
 * connection; `up()` listens again on the same port.
 */

export interface ReceivedRequest {
  /** Arrival order, from 0. */
  seq: number;
  /** The `webhook-id` header (undefined when missing). */
  id: string | undefined;
  method: string;
  /** Path and query as requested. */
  path: string;
  body: string;
  /** Lower-case header names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  /** True when every secret the receiver holds verifies the request (and there is at least one). */
  verified: boolean;
  /** Verdict per secret, in the order the secrets were given. */
  verifiedBy: boolean[];
  /** Why verification failed, per secret (undefined when it passed). */
  verifyErrors: (string | undefined)[];
  /** Date.now() when the whole body had arrived. */
  at: number;
  /** Status the receiver answered (undefined while it has not answered, or never did). */
  status: number | undefined;
  /** Date.now() when the answer was sent. */
  answeredAt: number | undefined;
}

export interface Reply {
  status: number;
  headers?: Record<string, string>;
  body?: string;
  /** Wait this long before answering (a slow endpoint). */
  delayMs?: number;
}

export type Responder = (req: ReceivedRequest) => Reply | Promise<Reply>;

export interface ReceiverOptions {
  /** `whsec_...` secrets to verify with; each is tried on its own. */
  secrets: readonly string[];
  respond?: Responder;
  /** Port to listen on (0 = any free port). */
  port?: number;
}

export interface Receiver {
  /** `http://127.0.0.1:<port>` (no trailing slash). */
  readonly url: string;
  readonly port: number;
  readonly isUp: boolean;
  /** Every request so far, in arrival order. */
  readonly requests: readonly ReceivedRequest[];
  /** TCP connections accepted so far. */
  readonly connections: number;
  /** Replaces the responder for later requests. */
  respond(fn: Responder): void;
  /** Requests whose path (without query) is `path`. */
  on(path: string): ReceivedRequest[];
  /** Distinct webhook-ids received (optionally only on `path`). */
  distinctIds(path?: string): Set<string>;
  /** Distinct webhook-ids that were answered with a 2xx (optionally only on `path`). */
  deliveredIds(path?: string): Set<string>;
  /** Stops listening and drops every open connection; the port stays reserved for `up()`. */
  down(): Promise<void>;
  /** Listens again on the same port. */
  up(): Promise<void>;
  close(): Promise<void>;
}

export const ok: Responder = () => ({ status: 200, body: 'ok' });

/** A fresh Standard Webhooks secret (`whsec_` + base64 of 24 random bytes). */
export function newSecret(): string {
  const bytes = new Uint8Array(24);
  crypto.getRandomValues(bytes);
  return `whsec_${Buffer.from(bytes).toString('base64')}`;
}

function pathOf(path: string): string {
  const q = path.indexOf('?');
  return q < 0 ? path : path.slice(0, q);
}

export async function startReceiver(options: ReceiverOptions): Promise<Receiver> {
  const verifiers = options.secrets.map((s) => new Webhook(s));
  let responder: Responder = options.respond ?? ok;
  const requests: ReceivedRequest[] = [];
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let connections = 0;
  let up = false;
  let port = options.port ?? 0;

  function verify(body: string, headers: Record<string, string>): { by: boolean[]; errors: (string | undefined)[] } {
    const by: boolean[] = [];
    const errors: (string | undefined)[] = [];
    for (const v of verifiers) {
      try {
        v.verify(body, headers);
        by.push(true);
        errors.push(undefined);
      } catch (err) {
        by.push(false);
        errors.push((err as Error).message);
      }
    }
    return { by, errors };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (v !== undefined) headers[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v;
    }
    const { by, errors } = verify(body, headers);
    const rec: ReceivedRequest = {
      seq: requests.length,
      id: headers['webhook-id'],
      method: req.method ?? '',
      path: req.url ?? '',
      body,
      headers,
      verified: by.length > 0 && by.every(Boolean),
      verifiedBy: by,
      verifyErrors: errors,
      at: Date.now(),
      status: undefined,
      answeredAt: undefined,
    };
    requests.push(rec);
    let reply: Reply;
    try {
      reply = await responder(rec);
    } catch (err) {
      reply = { status: 500, body: `responder threw: ${(err as Error).message}` };
    }
    if (reply.delayMs !== undefined && reply.delayMs > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          timers.delete(t);
          resolve();
        }, reply.delayMs);
        timers.add(t);
        // down()/close() drop the socket: stop waiting then.
        res.once('close', () => {
          clearTimeout(t);
          timers.delete(t);
          resolve();
        });
      });
    }
    if (res.destroyed || res.writableEnded) return;
    const text = reply.body ?? '';
    rec.status = reply.status;
    rec.answeredAt = Date.now();
    res.writeHead(reply.status, { 'content-type': 'text/plain', ...reply.headers, 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.destroyed) res.destroy();
    });
  });
  server.on('connection', (socket: Socket) => {
    connections++;
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  async function listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        port = (server.address() as AddressInfo).port;
        resolve();
      });
    });
    up = true;
  }

  async function down(): Promise<void> {
    if (!up) return;
    up = false;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of sockets) s.destroy();
    server.closeAllConnections();
    for (const t of timers) clearTimeout(t);
    timers.clear();
    await closed;
  }

  await listen();
  const only = (path: string | undefined) => (path === undefined ? requests : requests.filter((r) => pathOf(r.path) === path));

  return {
    get url() {
      return `http://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    get isUp() {
      return up;
    },
    requests,
    get connections() {
      return connections;
    },
    respond(fn) {
      responder = fn;
    },
    on: (path) => only(path),
    distinctIds(path) {
      return new Set(only(path).flatMap((r) => (r.id === undefined ? [] : [r.id])));
    },
    deliveredIds(path) {
      return new Set(
        only(path).flatMap((r) => (r.id !== undefined && r.status !== undefined && r.status >= 200 && r.status < 300 ? [r.id] : [])),
      );
    },
    down,
    up: listen,
    close: down,
  };
}
