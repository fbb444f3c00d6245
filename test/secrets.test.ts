import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import type { Simulator } from '../tools/simulator/server.ts';
import { keys, runCli, shortLease, spawnDaemon, useSuite, waitFor, type SpawnedDaemon } from './kit/harness.ts';
import type { Receiver } from './kit/receiver.ts';
import { freePort } from './kit/redis-server.ts';

/**
 * Secrets never leave the process. The daemon binary runs with LETTA_API_KEY=sk-test-<random>,
 * WATCHER_WEBHOOK_SECRET=whsec_<random base64> and REDIS_URL carrying a password (a private
 * redis-server started with --requirepass), at debug level, through everything that writes
 * errors: 5xx and malformed answers, a 401 phase, a Redis restart, bad intake entries, failing
 * and refused webhooks, dead letters; then a second daemon with a wrong Redis password, the CLI
 * (status, status --json, dead list, dead list --json) and configuration errors with the secrets
 * set. Every byte of all of that (stdout, stderr, P:events, P:dead, the CLI's output, /metrics,
 * /readyz, the webhook requests) is searched for each secret. Which answers fail is drawn from
 * the suite's seed (printed; LRW_SEED=<seed> repeats it).
 */

const { cleanup, simulator, receiver } = useSuite();

interface PasswordRedis {
  port: number;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** A private redis-server that requires `password` (AOF on, so a restart keeps the data). */
async function passwordRedis(password: string): Promise<PasswordRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'lrw-secrets-redis-'));
  let child: ChildProcess | undefined;
  const srv: PasswordRedis = {
    port,
    async start() {
      child = spawn(
        'redis-server',
        ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always',
          '--maxmemory-policy', 'noeviction', '--requirepass', password, '--loglevel', 'warning'],
        { stdio: 'ignore' },
      );
      const probe = new Redis({ port, host: '127.0.0.1', password, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      probe.on('error', () => {});
      try {
        await waitFor(async () => {
          if (probe.status !== 'ready') await probe.connect().catch(() => {});
          return (await probe.ping()) === 'PONG';
        }, { timeoutMs: 10_000 });
      } finally {
        probe.disconnect();
      }
    },
    async stop() {
      const c = child;
      child = undefined;
      if (!c || c.exitCode !== null) return;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      await exited;
    },
  };
  await srv.start();
  cleanup.add(async () => {
    await srv.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return srv;
}

/** Each secret found in each text, with where it was (the secret itself blanked out). */
function scan(secrets: Readonly<Record<string, string>>, texts: Readonly<Record<string, string>>): { hits: string[]; scanned: number } {
  const hits: string[] = [];
  for (const [where, text] of Object.entries(texts)) {
    for (const [name, secret] of Object.entries(secrets)) {
      const at = text.indexOf(secret);
      if (at < 0) continue;
      const context = text.slice(Math.max(0, at - 160), at + secret.length + 40).replaceAll(secret, '<SECRET>');
      hits.push(`${name} in ${where}: …${context}…`);
    }
  }
  return { hits, scanned: Object.values(texts).reduce((n, t) => n + t.length, 0) };
}

async function get(port: number, path: string): Promise<string> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(5000) });
    return `${res.status} ${await res.text()}`;
  } catch (err) {
    return String(err);
  }
}

describe('secrets', () => {
  it('no secret (API key, webhook secret or its base64, Redis password) appears in any output, event, dead letter or error', async () => {
    const apiKey = `sk-test-${randomBytes(18).toString('hex')}`;
    const secretB64 = randomBytes(32).toString('base64');
    const webhookSecret = `whsec_${secretB64}`;
    const redisPassword = `pw-${randomBytes(12).toString('hex')}`;
    const malformedSecret = `whsec_!!${randomBytes(12).toString('hex')}`;
    const secrets: Record<string, string> = {
      LETTA_API_KEY: apiKey,
      WATCHER_WEBHOOK_SECRET: webhookSecret,
      'webhook secret, base64 part': secretB64,
      'Redis password': redisPassword,
      'malformed webhook secret': malformedSecret,
    };

    const rs = await passwordRedis(redisPassword);
    const redisUrl = `redis://:${redisPassword}@127.0.0.1:${rs.port}`;
    const producer = new Redis(redisUrl, { maxRetriesPerRequest: null });
    producer.on('error', () => {});
    cleanup.add(() => producer.disconnect());
    const sim: Simulator = await simulator({ apiKey, faults: { errorRate: 0.3, malformedRate: 0.05 } });
    const rx: Receiver = await receiver({
      secrets: [webhookSecret],
      respond: (r) => (r.path === '/fail' ? { status: 500, body: 'always failing' } : r.seq % 2 === 0 ? { status: 503, body: 'busy' } : { status: 200 }),
    });

    const dir = mkdtempSync(join(tmpdir(), 'lrw-secrets-'));
    cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
    const configPath = join(dir, 'watcher.json');
    const lease = shortLease(1000);
    writeFileSync(
      configPath,
      JSON.stringify({
        ...lease,
        letta: { ...(lease['letta'] as object), authPauseMs: 500 },
        webhooks: {
          targets: [
            { url: `${rx.url}/hook`, name: 'hook' },
            { url: `${rx.url}/fail`, name: 'fail', format: 'letta' },
          ],
          scheduleMs: [0, 50, 100],
        },
      }),
    );
    const prefix = `sec-${randomBytes(4).toString('hex')}`;
    const k = keys(prefix);
    const httpPort = await freePort();
    const env: Record<string, string> = {
      REDIS_URL: redisUrl,
      WATCHER_KEY_PREFIX: prefix,
      LETTA_BASE_URL: sim.url,
      LETTA_API_KEY: apiKey,
      WATCHER_WEBHOOK_SECRET: webhookSecret,
      WATCHER_CONFIG: configPath,
      WATCHER_LOG_LEVEL: 'debug',
      WATCHER_POLL_INITIAL_MS: '50',
      WATCHER_POLL_MAX_MS: '200',
      WATCHER_HTTP_HOST: '127.0.0.1',
      WATCHER_HTTP_PORT: String(httpPort),
      WATCHER_SHUTDOWN_GRACE_MS: '1000',
    };
    const daemon: SpawnedDaemon = spawnDaemon(env);
    await daemon.ready();

    // Runs, bad intake entries, and per-run URLs the guard refuses (dead letters, no packet sent).
    const runs = Array.from({ length: 30 }, (_, i) => sim.createRun({ durationMs: (i * 97) % 1500, outcome: (['completed', 'failed', 'cancelled'] as const)[i % 3] ?? 'completed' }));
    const bad = ['../admin', '{"run_id": 5}', 'x'.repeat(70_000), '{"run_id":"ok-1","metadata":[]}', '\u0000'];
    const perRun = [sim.createRun({ durationMs: 200, outcome: 'completed' }), sim.createRun({ durationMs: 300, outcome: 'failed' })];
    runs.push(...perRun);
    await producer.lpush(
      k.intake,
      ...runs.slice(0, -2).map((r) => r.id),
      ...bad,
      JSON.stringify({ run_id: perRun[0]?.id, webhook_url: 'https://refused.invalid/hook', metadata: { team: 'ops' } }),
      JSON.stringify({ run_id: perRun[1]?.id, callback_url: 'https://also-refused.invalid/cb' }),
    );
    await waitFor(async () => (await producer.xlen(k.events)) >= 10, { timeoutMs: 20_000, describe: () => daemon.output().slice(-2000) });

    // A 401 phase: the key is refused for a while.
    const refusedBefore = sim.stats().byStatus['401'] ?? 0;
    sim.setApiKey(`sk-test-${randomBytes(18).toString('hex')}`);
    await waitFor(async () => (await get(httpPort, '/readyz')).includes('credentials'), { timeoutMs: 10_000 });
    await waitFor(() => (sim.stats().byStatus['401'] ?? 0) >= refusedBefore + 3, { timeoutMs: 10_000 });
    const readyzDuringAuth = await get(httpPort, '/readyz');
    sim.setApiKey(apiKey);

    // A Redis restart: connection errors get logged.
    await rs.stop();
    await waitFor(() => daemon.output().includes('Redis connection error'), { timeoutMs: 10_000 });
    const readyzDuringRedis = await get(httpPort, '/readyz');
    await rs.start();

    await waitFor(
      async () => (await producer.xlen(k.events)) >= runs.length && (await producer.zcard(k.due)) === 0 && (await producer.zcard(k.webhooks)) === 0,
      { timeoutMs: 30_000, describe: async () => `${await producer.xlen(k.events)} events, outbox ${await producer.zcard(k.webhooks)}\n${daemon.output().slice(-2000)}` },
    );
    sim.setFaults({ errorRate: 0, malformedRate: 0 });
    const metrics = await get(httpPort, '/metrics');
    const healthz = await get(httpPort, '/healthz');

    // The CLI, with every secret in its environment.
    const cliEnv = { REDIS_URL: redisUrl, WATCHER_KEY_PREFIX: prefix, LETTA_API_KEY: apiKey, WATCHER_WEBHOOK_SECRET: webhookSecret };
    const cli: Record<string, { code: number; out: string }> = {
      status: await runCli(['status'], cliEnv),
      'status --json': await runCli(['status', '--json'], cliEnv),
      'dead list': await runCli(['dead', 'list'], cliEnv),
      'dead list --json': await runCli(['dead', 'list', '--json'], cliEnv),
    };
    expect(cli['status']?.code).toBe(0);
    expect(cli['status --json']?.code).toBe(0);
    expect(cli['dead list --json']?.code).toBe(0);

    // Configuration errors, each with every secret set (exit 78).
    const configErrors: Record<string, { code: number; out: string }> = {};
    const badConfig = async (name: string, extra: Record<string, string>, file?: string) => {
      let path = configPath;
      if (file !== undefined) {
        path = join(dir, `${name.replace(/\W+/g, '-')}.json`);
        writeFileSync(path, file);
      }
      configErrors[name] = await runCli(['run'], { ...env, WATCHER_CONFIG: path, ...extra });
    };
    await badConfig('bad number', { WATCHER_CONCURRENCY: 'abc' });
    await badConfig('malformed webhook secret', { WATCHER_WEBHOOK_SECRET: `${webhookSecret} ${malformedSecret}` });
    await badConfig('REDIS_URL not redis://', { REDIS_URL: `http://:${redisPassword}@127.0.0.1:${rs.port}` });
    await badConfig('REDIS_URL with a bad port', { REDIS_URL: `redis://:${redisPassword}@127.0.0.1:notaport` });
    await badConfig('LETTA_BASE_URL with the key as password', { LETTA_BASE_URL: `ftp://user:${apiKey}@letta.invalid/` });
    await badConfig('secrets in the config file', {}, JSON.stringify({ secrets: { lettaApiKey: apiKey, webhookSecrets: [webhookSecret] } }));
    await badConfig('secret under an unknown file key', {}, JSON.stringify({ letta: { apiKey }, webhooks: { secret: webhookSecret } }));
    await badConfig('secret as a wrongly typed file value', {}, JSON.stringify({ poll: { leaseMs: apiKey }, redis: { url: redisUrl.replace('redis://', 'http://') } }));
    for (const [name, r] of Object.entries(configErrors)) expect(r.code, `${name}: ${r.out}`).toBe(78);
    expect(configErrors['malformed webhook secret']?.out).toContain('WATCHER_WEBHOOK_SECRET');

    expect(await daemon.stop(), daemon.output().slice(-2000)).toBe(0);
    const out = daemon.output();
    const eventsRaw = (await producer.xrange(k.events, '-', '+')).map(([, f]) => f.join('\n'));
    const deadRaw = await producer.lrange(k.dead, 0, -1);

    // The run really went through the faults this test is about.
    expect(out).toMatch(/"level":50/); // error lines
    expect(out).toContain('Letta API refused our credentials');
    expect(out).toContain('poll failed; the run stays watched');
    expect(out).toContain('Redis connection error');
    expect(out).toContain('per-run webhook URL refused');
    expect(out).toContain('"level":20'); // debug lines
    expect(readyzDuringAuth).toMatch(/^503 .*credentials/);
    expect(readyzDuringRedis).toMatch(/^503 /);
    expect(eventsRaw.length).toBe(runs.length);
    expect(deadRaw.length).toBeGreaterThanOrEqual(bad.length + 2 + runs.length); // intake, refused URLs, /fail deliveries
    expect(rx.requests.some((r) => r.verified)).toBe(true);
    expect(sim.stats().byStatus['401'] ?? 0).toBeGreaterThan(0);

    const texts: Record<string, string> = {
      'daemon stdout/stderr': out,
      'P:events': eventsRaw.join('\n'),
      'P:dead': deadRaw.join('\n'),
      '/metrics': metrics,
      '/healthz': healthz,
      '/readyz during 401': readyzDuringAuth,
      '/readyz during the Redis restart': readyzDuringRedis,
      'webhook requests': rx.requests.map((r) => `${JSON.stringify(r.headers)}\n${r.body}`).join('\n'),
      ...Object.fromEntries(Object.entries(cli).map(([name, r]) => [`CLI ${name}`, r.out])),
      ...Object.fromEntries(Object.entries(configErrors).map(([name, r]) => [`config error (${name})`, r.out])),
    };
    const { hits, scanned } = scan(secrets, texts);
    console.log(`secrets scan: ${scanned} characters in ${Object.keys(texts).length} places, ${hits.length} hits`);
    expect(hits).toEqual([]);
  }, 90_000);

  it('a Redis password the server refuses (mistyped, or rotated under a running daemon) appears in no log line or CLI error', async () => {
    const password = `pw-${randomBytes(12).toString('hex')}`;
    const rotated = `pw-${randomBytes(12).toString('hex')}`;
    const mistyped = `pw-${randomBytes(12).toString('hex')}`;
    const rs = await passwordRedis(password);
    const url = (pw: string) => `redis://:${pw}@127.0.0.1:${rs.port}`;
    const base = { WATCHER_KEY_PREFIX: `sec-${randomBytes(4).toString('hex')}`, LETTA_BASE_URL: 'http://127.0.0.1:9', WATCHER_HTTP_PORT: '0', WATCHER_LOG_LEVEL: 'debug' };

    // Mistyped: the daemon and the CLI.
    const typo = spawnDaemon({ ...base, REDIS_URL: url(mistyped) });
    const cliStatus = await runCli(['status', '--json'], { ...base, REDIS_URL: url(mistyped) });
    const cliEnqueue = await runCli(['enqueue', 'run-x'], { ...base, REDIS_URL: url(mistyped) });
    expect(cliStatus.code).not.toBe(0);
    expect(cliEnqueue.code).not.toBe(0);

    // Rotated: a daemon that connected with the right password is cut off after the server's
    // password changed, and reconnects with the old one.
    const running = spawnDaemon({ ...base, REDIS_URL: url(password) });
    await running.ready();
    const admin = new Redis(url(password));
    cleanup.add(() => admin.disconnect());
    await admin.config('SET', 'requirepass', rotated);
    await admin.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');

    const refused = /WRONGPASS|NOAUTH/;
    await waitFor(() => refused.test(typo.output()) && refused.test(running.output()), {
      timeoutMs: 15_000,
      describe: () => `mistyped:\n${typo.output().slice(-1000)}\nrotated:\n${running.output().slice(-1000)}`,
    });
    await typo.kill9();
    await running.kill9();

    const { hits } = scan(
      { 'mistyped Redis password': mistyped, 'Redis password in REDIS_URL (rotated away)': password, 'new Redis password': rotated },
      {
        'daemon with a mistyped password': typo.output(),
        'daemon whose password was rotated': running.output(),
        'CLI status --json': cliStatus.out,
        'CLI enqueue': cliEnqueue.out,
      },
    );
    expect(hits).toEqual([]);
  }, 60_000);
});
