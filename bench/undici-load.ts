import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';

/**
 * A reference load generator between autocannon and the daemon: the daemon's own HTTP stack
 * (undici `request`, a keep-alive Agent with the same connection count, pipelining 1) and
 * JSON.parse of each body, and nothing else. It shows how much of the gap to autocannon is
 * the HTTP client itself.
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
const url = values.url ?? '';
const connections = Number(values.connections);
const until = performance.now() + Number(values.seconds) * 1000;
const agent = new Agent({ keepAliveTimeout: 30_000, connections, pipelining: 1 });
let requests = 0;
let errors = 0;

await Promise.all(
  Array.from({ length: connections }, async () => {
    while (performance.now() < until) {
      try {
        const res = await request(url, { dispatcher: agent });
        JSON.parse(await res.body.text());
        requests++;
      } catch {
        errors++;
      }
    }
  }),
);
await agent.close();
process.stdout.write(`${JSON.stringify({ requests, errors })}\n`);
