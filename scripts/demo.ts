/**
 * `npm run demo`: the whole product on one machine in about fifteen seconds. Starts Redis on a
 * free port (or uses REDIS_URL), the bundled Letta simulator, a webhook receiver that verifies
 * every signature, and the daemon itself (the real CLI, as a child process); enqueues 20 runs
 * with mixed outcomes; prints each event as it lands; ends with a table and cleans up.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { Webhook } from 'standardwebhooks';
import { parseLettaTime } from '../src/letta/run-state.ts';
import type { WatchEvent } from '../src/events/event.ts';
import { startSimulator, type SimOutcome } from '../tools/simulator/server.ts';
import { startRedisServer } from '../test/kit/redis-server.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const tty = process.stdout.isTTY === true;
const color = (code: number, s: string) => (tty ? `\x1b[${code}m${s}\x1b[0m` : s);
const green = (s: string) => color(32, s);
const red = (s: string) => color(31, s);
const yellow = (s: string) => color(33, s);
const dim = (s: string) => color(2, s);
const t0 = Date.now();
const say = (s: string) => process.stdout.write(`${dim(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s]`)} ${s}\n`);

const cleanups: (() => Promise<void> | void)[] = [];
async function cleanup(): Promise<void> {
  for (const fn of cleanups.reverse()) {
    try {
      await fn();
    } catch {
      // best effort
    }
  }
}

async function startRedis(): Promise<string> {
  if (process.env['REDIS_URL']) return process.env['REDIS_URL'];
  try {
    const server = await startRedisServer();
    cleanups.push(() => server.destroy());
    return server.url;
  } catch (err) {
    throw new Error(`${(err as Error).message} (is redis-server installed? set REDIS_URL to use another Redis)`, { cause: err });
  }
}

interface Received {
  id: string;
  verified: boolean;
  path: string;
}

async function startReceiver(secret: string): Promise<{ url: string; received: Received[]; server: Server }> {
  const wh = new Webhook(secret);
  const received: Received[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      let verified = false;
      try {
        wh.verify(body, req.headers as Record<string, string>);
        verified = true;
      } catch {
        verified = false;
      }
      received.push({ id: String(req.headers['webhook-id']), verified, path: req.url ?? '' });
      res.writeHead(verified ? 204 : 401).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address();
  return { url: `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`, received, server };
}

async function main(): Promise<number> {
  say('starting Redis, the Letta simulator and a webhook receiver');
  const redisUrl = await startRedis();
  const sim = await startSimulator({ port: 0, durationMs: [1000, 6000], faults: { errorRate: 0.05, rateLimitRate: 0.05 } });
  cleanups.push(() => sim.close());
  const secret = `whsec_${Buffer.from('letta-run-watcher demo secret!!').toString('base64')}`;
  const receiver = await startReceiver(secret);
  cleanups.push(() => new Promise<void>((r) => receiver.server.close(() => r())));

  const prefix = `demo-${Math.random().toString(36).slice(2, 8)}`;
  const redis = new Redis(redisUrl);
  cleanups.push(async () => {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });

  const dir = mkdtempSync(join(tmpdir(), 'lrw-demo-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const configFile = join(dir, 'watcher.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      poll: { initialMs: 500, factor: 1.5, maxMs: 3000 },
      webhooks: {
        targets: [
          { url: `${receiver.url}/events`, name: 'demo-events' },
          { url: `${receiver.url}/letta-callback`, name: 'demo-letta', format: 'letta' },
        ],
      },
    }),
  );

  // 21 runs: 17 simulated with mixed outcomes, one that ends before it is even enqueued, one
  // that never ends (watched for 4 s), one the API has never heard of, one whose ID it refuses.
  const outcomes: SimOutcome[] = ['completed', 'completed', 'completed', 'failed', 'completed', 'cancelled', 'completed', 'failed'];
  const runs: { id: string; expect: string }[] = [];
  for (let i = 0; i < 17; i++) {
    const outcome = outcomes[i % outcomes.length] as SimOutcome;
    runs.push({ id: sim.createRun({ outcome }).id, expect: `run.${outcome}` });
  }
  runs.push({ id: sim.createRun({ outcome: 'completed', durationMs: 0 }).id, expect: 'run.completed' });
  const forever = sim.createRun({ outcome: 'never' }).id;
  runs.push({ id: forever, expect: 'run.expired' });
  runs.push({ id: 'run-00000000-0000-4000-8000-000000000000', expect: 'run.not_found' });
  // Not run-<uuid4>: Letta answers 400 "Invalid run ID format", and the run is dead-lettered.
  const malformed = 'run-123';
  runs.push({ id: malformed, expect: 'dead letter' });

  say(`starting the daemon (key prefix ${prefix})`);
  const daemon: ChildProcess = spawn(process.execPath, [join(root, 'src/main.ts'), 'run'], {
    cwd: root,
    env: {
      ...process.env,
      LETTA_BASE_URL: sim.url,
      REDIS_URL: redisUrl,
      WATCHER_KEY_PREFIX: prefix,
      WATCHER_CONFIG: configFile,
      WATCHER_WEBHOOK_SECRET: secret,
      WATCHER_HTTP_PORT: '0',
      WATCHER_LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let daemonExit: number | null | undefined;
  const exited = new Promise<number | null>((r) => daemon.once('exit', (code) => r((daemonExit = code))));
  cleanups.push(async () => {
    if (daemonExit === undefined) {
      daemon.kill('SIGKILL');
      await exited;
    }
  });
  const daemonLines: string[] = [];
  for (const stream of [daemon.stdout, daemon.stderr]) {
    stream?.setEncoding('utf8');
    stream?.on('data', (chunk: string) => daemonLines.push(...chunk.split('\n').filter(Boolean)));
  }

  const producer = new Redis(redisUrl);
  cleanups.push(() => producer.disconnect());
  for (const r of runs) {
    const entry = r.id === forever ? JSON.stringify({ run_id: r.id, max_watch_ms: 4000, metadata: { demo: 'never ends' } }) : JSON.stringify({ run_id: r.id, metadata: { demo: true } });
    await producer.lpush(`${prefix}:intake`, entry);
  }
  say(`enqueued ${runs.length} runs (LPUSH ${prefix}:intake); waiting for their events`);

  const events = new Map<string, WatchEvent>();
  let lastId = '0';
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    // Both targets, the envelope and Letta's callback body, before the daemon is stopped.
    const delivered = (path: string) => new Set(receiver.received.filter((r) => r.verified && r.path === path).map((r) => r.id));
    const [envelopes, callbacks] = [delivered('/events'), delivered('/letta-callback')];
    const allDelivered = [...events.values()].every((e) => envelopes.has(e.id) && callbacks.has(e.id));
    const deadLetter = (await producer.lrange(`${prefix}:dead`, 0, -1)).some((d) => d.includes(malformed));
    if (events.size === runs.length - 1 && allDelivered && deadLetter) break;
    const res = (await producer.xread('COUNT', 100, 'BLOCK', 250, 'STREAMS', `${prefix}:events`, lastId)) as [string, [string, string[]][]][] | null;
    for (const [, entries] of res ?? []) {
      for (const [id, fields] of entries) {
        lastId = id;
        const e = JSON.parse(fields[1] ?? '{}') as WatchEvent;
        events.set(e.data.run_id, e);
        const lag = lagOf(e);
        const mark = e.type === 'run.completed' ? green('✔') : e.type === 'run.failed' ? red('✘') : yellow('•');
        say(`${mark} ${e.type.padEnd(14)} ${e.data.run_id}${lag === null ? '' : dim(`  lag ${lag.toFixed(2)} s`)}${dim(`  polls ${e.data.watch.polls}`)}`);
      }
    }
  }

  say('stopping the daemon (SIGTERM)');
  daemon.kill('SIGTERM');
  const code = await exited;

  const delivered = new Set(receiver.received.filter((r) => r.verified && r.path === '/events').map((r) => r.id));
  const lettaDelivered = new Set(receiver.received.filter((r) => r.verified && r.path === '/letta-callback').map((r) => r.id));
  const unverified = receiver.received.filter((r) => !r.verified).length;
  process.stdout.write('\n');
  const header = ['run', 'expected', 'outcome', 'lag (s)', 'webhook', 'letta-format'];
  const dead = (await producer.lrange(`${prefix}:dead`, 0, -1)).map((d) => JSON.parse(d) as { kind: string; reason: string; entry: string });
  const rows = runs.map((r) => {
    if (r.id === malformed) {
      const letter = dead.find((d) => d.kind === 'run' && d.entry.includes(malformed));
      return [r.id, r.expect, letter ? 'dead letter' : 'MISSING', '-', 'n/a', 'n/a'];
    }
    const e = events.get(r.id);
    const lag = e ? lagOf(e) : null;
    return [r.id, r.expect, e?.type ?? 'MISSING', lag === null ? '-' : lag.toFixed(2), e && delivered.has(e.id) ? 'yes' : 'no', e && lettaDelivered.has(e.id) ? 'yes' : 'no'];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ');
  process.stdout.write(`${line(header)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n${rows.map(line).join('\n')}\n\n`);

  const wrong = rows.filter((r) => r[1] !== r[2]).length;
  const undelivered = rows.filter((r) => r[4] === 'no' || r[5] === 'no').length;
  const stats = sim.stats();
  const letters = dead.filter((d) => d.kind === 'run').length;
  say(`${events.size}/${runs.length - 1} events and ${letters} dead letter${letters === 1 ? '' : 's'}, ${wrong} with an unexpected outcome, ${undelivered} without both webhooks, ${unverified} bad signatures`);
  say(`the simulator answered ${stats.requests} requests (${Object.entries(stats.byStatus).map(([s, n]) => `${s}: ${n}`).join(', ')}); faults were retried`);
  say(`daemon exited with code ${code}`);
  const ok = events.size === runs.length - 1 && wrong === 0 && undelivered === 0 && unverified === 0 && code === 0;
  if (!ok && daemonLines.length > 0) process.stdout.write(`\ndaemon output:\n${daemonLines.slice(-30).join('\n')}\n`);
  process.stdout.write(ok ? green('demo passed\n') : red('demo FAILED\n'));
  return ok ? 0 : 1;
}

function lagOf(e: WatchEvent): number | null {
  const finished = parseLettaTime(e.data.run?.completed_at);
  if (finished === undefined || e.type === 'run.expired') return null;
  return Math.max(0, Date.parse(e.data.watch.detected_at) - finished) / 1000;
}

let code = 1;
try {
  code = await main();
} catch (err) {
  process.stderr.write(`demo failed: ${(err as Error).stack ?? String(err)}\n`);
} finally {
  await cleanup();
}
process.exit(code);
