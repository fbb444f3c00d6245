import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, inject, it } from 'vitest';
import { parse } from 'yaml';
import type { Config } from '../src/config.ts';
import type { Daemon } from '../src/daemon.ts';
import { makeMetrics } from '../src/ops/metrics.ts';
import type { Simulator } from '../tools/simulator/server.ts';
import { keys, startDaemon, testConfig, useSuite, waitFor } from './kit/harness.ts';
import { freePort } from './kit/redis-server.ts';

/**
 * The daemon's HTTP endpoints (/healthz, /readyz, /metrics) and what names their metrics, the
 * alert rules and the dashboard use. What /readyz and /healthz say through a Redis outage is
 * asserted, for the whole outage, in outage.test.ts.
 */

const ROOT = new URL('..', import.meta.url);
const { redis, cleanup, simulator } = useSuite();

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}

async function daemonWith(sim: Simulator, extra: Record<string, string> = {}): Promise<{ daemon: Daemon; port: number; config: Config }> {
  const port = await freePort();
  const config = testConfig({ LETTA_BASE_URL: sim.url, WATCHER_HTTP_HOST: '127.0.0.1', WATCHER_HTTP_PORT: String(port), ...extra });
  const daemon = await startDaemon(cleanup, config);
  return { daemon, port, config };
}

describe('health, readiness and metrics over HTTP', () => {
  it('serves /healthz, /readyz and /metrics (counters of the runs watched, no run IDs), and 404 elsewhere', async () => {
    const sim = await simulator();
    const { port, config } = await daemonWith(sim);

    expect(await get(port, '/healthz')).toEqual({ status: 200, body: 'ok\n' });
    expect((await get(port, '/readyz')).status).toBe(200);
    expect((await get(port, '/nope')).status).toBe(404);

    // Watch a few runs so the counters have samples, then look for them in the scrape.
    const ids = [0, 1, 2].map(() => sim.createRun({ durationMs: 0, outcome: 'completed' }).id);
    await redis.lpush(keys(config.redis.keyPrefix).intake, ...ids);
    const metrics = await waitFor(
      async () => {
        const m = await get(port, '/metrics');
        return m.body.includes('letta_watcher_events_total{type="run.completed"} 3') ? m : undefined;
      },
      { timeoutMs: 15_000 },
    );
    expect(metrics.body).toContain('letta_watcher_events_total{type="run.completed"} 3');
    expect(metrics.body).toContain('letta_watcher_intake_total{result="accepted"} 3');
    expect(metrics.body).toMatch(/letta_watcher_runs_watched 0/);
    for (const id of ids) expect(metrics.body).not.toContain(id);
  });

  it('reports not ready while draining', async () => {
    const sim = await simulator({ faults: { latencyMs: 1500 } });
    const { daemon, port, config } = await daemonWith(sim, { WATCHER_SHUTDOWN_GRACE_MS: '5000' });
    await redis.lpush(keys(config.redis.keyPrefix).intake, sim.createRun({ outcome: 'never' }).id);
    await waitFor(() => sim.stats().requests > 0, { timeoutMs: 15_000 });
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
