import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { Redis } from 'ioredis';
import { parse } from 'yaml';
import { loadConfig, type Config } from '../src/config.ts';
import { Daemon } from '../src/daemon.ts';
import { makeLogger } from '../src/log.ts';
import { makeMetrics } from '../src/ops/metrics.ts';
import { startSimulator, type Simulator } from '../tools/simulator/server.ts';
import { freePort, startRedisServer, type RedisServer } from './kit/redis-server.ts';

const ROOT = new URL('..', import.meta.url);
const log = makeLogger('silent');

let cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const fn of cleanups.reverse()) await fn().catch(() => {});
  cleanups = [];
});

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}

async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function daemonWith(redisUrl: string, sim: Simulator, extra: Record<string, string> = {}): Promise<{ daemon: Daemon; port: number; config: Config }> {
  const port = await freePort();
  const config = loadConfig({
    env: {
      REDIS_URL: redisUrl,
      LETTA_BASE_URL: sim.url,
      WATCHER_KEY_PREFIX: `ops-${Math.random().toString(36).slice(2, 10)}`,
      WATCHER_HTTP_HOST: '127.0.0.1',
      WATCHER_HTTP_PORT: String(port),
      WATCHER_POLL_INITIAL_MS: '50',
      WATCHER_POLL_MAX_MS: '200',
      ...extra,
    },
  });
  const daemon = new Daemon({ config, log });
  await daemon.start();
  cleanups.push(() => daemon.stop());
  return { daemon, port, config };
}

describe('health, readiness and metrics over HTTP', () => {
  it('serves /healthz, /readyz and /metrics, and readiness flips while Redis is down', async () => {
    const redis: RedisServer = await startRedisServer();
    cleanups.push(() => redis.destroy());
    const sim = await startSimulator({ port: 0 });
    cleanups.push(() => sim.close());
    const { port, config } = await daemonWith(redis.url, sim);

    expect(await get(port, '/healthz')).toEqual({ status: 200, body: 'ok\n' });
    expect((await get(port, '/readyz')).status).toBe(200);
    expect((await get(port, '/nope')).status).toBe(404);

    // Watch a few runs so the counters have samples, then look for them in the scrape.
    const producer = new Redis(redis.url);
    cleanups.push(async () => producer.disconnect());
    const ids = [0, 1, 2].map(() => sim.createRun({ durationMs: 0, outcome: 'completed' }).id);
    await producer.lpush(`${config.redis.keyPrefix}:intake`, ...ids);
    const metrics = await until(() => get(port, '/metrics'), (m) => m.body.includes('letta_watcher_events_total{type="run.completed"} 3'));
    expect(metrics.body).toContain('letta_watcher_events_total{type="run.completed"} 3');
    expect(metrics.body).toContain('letta_watcher_intake_total{result="accepted"} 3');
    expect(metrics.body).toMatch(/letta_watcher_runs_watched 0/);
    for (const id of ids) expect(metrics.body).not.toContain(id);

    await redis.stop();
    const down = await until(() => get(port, '/readyz'), (r) => r.status === 503);
    expect(down.status).toBe(503);
    expect(down.body).toMatch(/Redis/);
    // Liveness is about the loops, which keep turning while they retry Redis.
    expect((await get(port, '/healthz')).status).toBe(200);

    await redis.start();
    expect((await until(() => get(port, '/readyz'), (r) => r.status === 200)).status).toBe(200);
  });

  it('reports not ready while draining', async () => {
    const sim = await startSimulator({ port: 0, faults: { latencyMs: 1500 } });
    cleanups.push(() => sim.close());
    const { daemon, port, config } = await daemonWith(inject('redisUrl'), sim, { WATCHER_SHUTDOWN_GRACE_MS: '5000' });
    const producer = new Redis(inject('redisUrl'));
    cleanups.push(async () => producer.disconnect());
    await producer.lpush(`${config.redis.keyPrefix}:intake`, sim.createRun({ outcome: 'never' }).id);
    await until(async () => sim.stats().requests, (n) => n > 0);
    const stopping = daemon.stop();
    const during = await get(port, '/readyz');
    expect(during.status).toBe(503);
    expect(during.body).toContain('draining');
    await stopping;
    await expect(get(port, '/readyz')).rejects.toThrow();
  });
});

describe('metric names', () => {
  const exported = async () => {
    const m = makeMetrics();
    return (await m.registry.getMetricsAsJSON()).map((x) => ({ name: x.name, type: String(x.type) }));
  };

  it('follow Prometheus conventions', async () => {
    for (const { name, type } of await exported()) {
      expect(name).toMatch(/^letta_watcher_[a-z0-9_]+$/);
      if (type === 'counter') expect(name).toMatch(/_total$/);
      if (type === 'histogram' && !name.startsWith('letta_watcher_nodejs_')) expect(name).toMatch(/_seconds$/);
    }
  });

  it('alert rules and the dashboard parse and name only exported metrics', async () => {
    const names = new Set<string>();
    for (const { name, type } of await exported()) {
      names.add(name);
      if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(`${name}${s}`);
    }
    const rules = parse(readFileSync(new URL('config/prometheus-alerts.yml', ROOT), 'utf8')) as {
      groups: { rules: { alert: string; expr: string }[] }[];
    };
    const exprs = rules.groups.flatMap((g) => g.rules.map((r) => r.expr));
    expect(exprs.length).toBeGreaterThanOrEqual(5);
    const dashboard = JSON.parse(readFileSync(new URL('config/grafana-dashboard.json', ROOT), 'utf8')) as {
      panels: { targets: { expr: string }[] }[];
    };
    exprs.push(...dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr)));
    const used = new Set(exprs.flatMap((e) => e.match(/letta_watcher_[a-z0-9_]+/g) ?? []));
    expect(used.size).toBeGreaterThan(5);
    expect([...used].filter((n) => !names.has(n))).toEqual([]);
  });
});

describe('npm run demo', () => {
  it('runs to completion, every run accounted for', async () => {
    const child = spawn(process.execPath, ['scripts/demo.ts'], {
      cwd: new URL('.', ROOT),
      env: { ...process.env, REDIS_URL: inject('redisUrl') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    expect(out).toContain('20/20 events and 1 dead letter, 0 with an unexpected outcome, 0 without both webhooks, 0 bad signatures');
    expect(out).toContain('demo passed');
    expect(code).toBe(0);
  }, 90_000);
});
