import { Agent, createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

const RUN_PATH = /^\/v1\/runs\/[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

/**
 * A pass-through in front of the simulator that sees every request and answer: it checks the
 * request path and counts malformed 200 bodies, which the simulator's stats file under "200".
 */
export interface Tap {
  url: string;
  requests: number;
  badPaths: string[];
  malformed: number;
  close(): Promise<void>;
}

export async function startTap(upstream: string): Promise<Tap> {
  const target = new URL(upstream);
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  const tap: Tap = { url: '', requests: 0, badPaths: [], malformed: 0, close: async () => {} };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? '';
    // Besides single runs the daemon asks for Letta's health and the list of active runs.
    const other = path === '/v1/health/' || path.startsWith('/v1/runs/?');
    if (path !== '/v1/health/') tap.requests++;
    if (!RUN_PATH.test(path) && !other && tap.badPaths.length < 100) tap.badPaths.push(path);
    const up = httpRequest(
      { host: target.hostname, port: target.port, path, method: req.method, headers: req.headers, agent },
      (ur) => {
        const chunks: Buffer[] = [];
        ur.on('data', (c: Buffer) => chunks.push(c));
        ur.on('error', () => res.destroy());
        ur.on('end', () => {
          const body = Buffer.concat(chunks);
          if (ur.statusCode === 200 && !other && !isRun(body)) tap.malformed++;
          if (res.destroyed) return;
          res.writeHead(ur.statusCode ?? 502, ur.headers);
          res.end(body);
        });
      },
    );
    up.on('error', () => res.destroy());
    // The daemon gave up (a hung request timed out): drop the upstream request too.
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  tap.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  tap.close = () =>
    new Promise<void>((r) => {
      server.close(() => r());
      server.closeAllConnections();
      agent.destroy();
    });
  return tap;
}

function isRun(body: Buffer): boolean {
  try {
    const v = JSON.parse(body.toString('utf8')) as { agent_id?: unknown; status?: unknown };
    return typeof v === 'object' && v !== null && typeof v.agent_id === 'string' && (v.status === undefined || v.status === null || typeof v.status === 'string');
  } catch {
    return false;
  }
}
