import { createServer, type Server } from 'node:http';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { CallbackReceiver } from '../polling/callbacks.ts';

/**
 * Health, readiness, metrics and Letta's callback on node:http. /healthz fails when a loop has stopped turning
 * (a stuck loop, not a slow Redis: loops keep turning while they retry); /readyz fails while
 * Redis does not answer, the API refuses our credentials, or the daemon is draining.
 */
export interface Probes {
  /** Names of loops that have not turned within their limit; empty when all are alive. */
  stalledLoops(): string[];
  /** Reasons the daemon is not ready; empty when ready. */
  notReady(): Promise<string[]>;
  registry: Registry;
  /** POST /callbacks/letta, when WATCHER_CALLBACK_TOKEN is set. */
  readonly callbacks: CallbackReceiver | undefined;
}

export async function startHttpServer(host: string, port: number, probes: Probes, log: Logger): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const reply = (status: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (path === '/callbacks/letta' && probes.callbacks) {
      if (req.method !== 'POST') return reply(405, 'method not allowed\n');
      return probes.callbacks.handle(req, res, new URLSearchParams(q < 0 ? '' : url.slice(q + 1)));
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(405, 'method not allowed\n');
    if (path === '/healthz') {
      const stalled = probes.stalledLoops();
      return stalled.length === 0 ? reply(200, 'ok\n') : reply(503, `stalled: ${stalled.join(', ')}\n`);
    }
    if (path === '/readyz') {
      probes.notReady().then(
        (reasons) => (reasons.length === 0 ? reply(200, 'ready\n') : reply(503, `not ready: ${reasons.join('; ')}\n`)),
        (err: unknown) => reply(503, `not ready: ${(err as Error).message}\n`),
      );
      return;
    }
    if (path === '/metrics') {
      probes.registry.metrics().then(
        (text) => reply(200, text, probes.registry.contentType),
        (err: unknown) => {
          log.error({ err }, 'metrics collection failed');
          reply(500, 'metrics collection failed\n');
        },
      );
      return;
    }
    reply(404, 'not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  const bound = typeof address === 'object' && address ? address.port : port;
  log.info({ host, port: bound }, 'health and metrics server listening');
  return {
    server,
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
