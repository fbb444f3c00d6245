import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

/**
 * A minimal Letta-shaped API for the benchmark, run as its own process so the load generator
 * and the daemon hit the same server under the same conditions: every `GET /v1/runs/{id}`
 * answers one fixed `running` Run (the run never finishes), after an optional latency.
 * `GET /_stats` reports the run requests seen and those still unanswered.
 *
 *   node bench/api-server.ts [--latency-ms N]    prints {"port":N} on stdout once listening
 */
const { values } = parseArgs({ options: { 'latency-ms': { type: 'string', default: '0' } } });
const latencyMs = Number(values['latency-ms']);

const BODY = JSON.stringify({
  id: 'run-00000000-0000-4000-8000-000000000000',
  agent_id: 'agent-00000000-0000-4000-8000-000000000000',
  status: 'running',
  background: false,
  conversation_id: null,
  base_template_id: null,
  metadata: null,
  request_config: null,
  created_at: '2026-01-01T00:00:00.000000',
  completed_at: null,
  stop_reason: null,
  callback_url: null,
  callback_sent_at: null,
  callback_status_code: null,
  callback_error: null,
  ttft_ns: null,
  total_duration_ns: null,
});
const HEADERS = { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(BODY)) };

let requests = 0;
let inflight = 0;

const server = createServer((req, res) => {
  if (req.url === '/_stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ requests, inflight, t: performance.now() }));
    return;
  }
  if (req.method === 'GET' && req.url === '/v1/health/') {
    // Letta's health answer: the daemon checks its base URL is a Letta API at start-up.
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"version":"bench","status":"ok"}');
    return;
  }
  if (req.method !== 'GET' || !req.url?.startsWith('/v1/runs/')) {
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"detail":"Not Found"}');
    return;
  }
  requests++;
  if (latencyMs <= 0) {
    res.writeHead(200, HEADERS);
    res.end(BODY);
    return;
  }
  inflight++;
  let open = true;
  const finish = () => {
    if (!open) return;
    open = false;
    inflight--;
    clearTimeout(timer);
  };
  const timer = setTimeout(() => {
    finish();
    if (!res.destroyed) {
      res.writeHead(200, HEADERS);
      res.end(BODY);
    }
  }, latencyMs);
  res.once('close', finish);
});
server.keepAliveTimeout = 60_000;
server.headersTimeout = 65_000;
server.requestTimeout = 0;
server.maxConnections = 50_000;

server.listen({ port: 0, host: '127.0.0.1', backlog: 8192 }, () => {
  const addr = server.address();
  process.stdout.write(`${JSON.stringify({ port: typeof addr === 'object' && addr ? addr.port : 0 })}\n`);
});

const stop = () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 500).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
