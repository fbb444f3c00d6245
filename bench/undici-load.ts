import { parseArgs } from 'node:util';
import { Agent, type Dispatcher } from 'undici';

/**
 * A reference load generator between autocannon and the daemon: the daemon's own HTTP stack
 * (undici's handler API, `dispatch`, through a keep-alive Agent with the same connection count,
 * pipelining 1) and JSON.parse of each body, and nothing else. It shows how much of the gap to
 * autocannon is the HTTP client itself, and what the daemon's pipeline adds on top.
 *
 *   node bench/undici-load.ts --url URL --connections N --seconds S   prints {"requests":N}
 */
const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    connections: { type: 'string', default: '32' },
    seconds: { type: 'string', default: '10' },
  },
});
const url = new URL(values.url ?? '');
const connections = Number(values.connections);
const until = performance.now() + Number(values.seconds) * 1000;
const agent = new Agent({ keepAliveTimeout: 30_000, connections, pipelining: 1 });
const headers = { accept: 'application/json' };
let requests = 0;
let errors = 0;

function get(): Promise<void> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    agent.dispatch({ origin: url.origin, path: url.pathname, method: 'GET', headers }, {
      onRequestStart() {},
      onResponseStart() {},
      onResponseData(_c, chunk) {
        chunks.push(chunk);
      },
      onResponseEnd() {
        JSON.parse(Buffer.concat(chunks).toString('utf8'));
        resolve();
      },
      onResponseError(_c, err) {
        reject(err);
      },
    } satisfies Dispatcher.DispatchHandler);
  });
}

await Promise.all(
  Array.from({ length: connections }, async () => {
    while (performance.now() < until) {
      try {
        await get();
        requests++;
      } catch {
        errors++;
      }
    }
  }),
);
await agent.close();
process.stdout.write(`${JSON.stringify({ requests, errors })}\n`);
