import { describe, it, expect, afterEach } from 'vitest';
import { request } from 'undici';
import { startSimulator } from '../tools/simulator/server.ts';
import type { Simulator, SimulatorOptions } from '../tools/simulator/server.ts';
import { parseSimulatorArgs, simulatorUsage } from '../tools/simulator/args.ts';
import { isDaemonError } from '../src/errors.ts';
import { seeded } from '../tools/simulator/prng.ts';

const T0 = Date.parse('2025-10-17T21:53:00.000Z');
const NAIVE_MICROS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$/;
const TERMINAL = ['completed', 'failed', 'cancelled'];

const open: Simulator[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
});

async function start(options: SimulatorOptions = {}): Promise<{ sim: Simulator; clock: { t: number } }> {
  const clock = { t: T0 };
  const sim = await startSimulator({ port: 0, now: () => clock.t, random: seeded(42), ...options });
  open.push(sim);
  return { sim, clock };
}

async function get(sim: Simulator, path: string, headers: Record<string, string> = {}) {
  const res = await request(`${sim.url}${path}`, { headers });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, text };
}

async function getJson(sim: Simulator, path: string, headers: Record<string, string> = {}) {
  const r = await get(sim, path, headers);
  return { ...r, body: JSON.parse(r.text) as Record<string, unknown> };
}

async function post(sim: Simulator, path: string, body: unknown) {
  const res = await request(`${sim.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.statusCode, body: (await res.body.json()) as Record<string, unknown> };
}

/** What a client needs from a Run: the simulator's malformed answers must fail this. */
function isRunBody(text: string): boolean {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return false;
  }
  if (v === null || typeof v !== 'object') return false;
  const r = v as Record<string, unknown>;
  return (
    typeof r['id'] === 'string' &&
    typeof r['agent_id'] === 'string' &&
    typeof r['status'] === 'string' &&
    ['created', 'running', ...TERMINAL].includes(r['status']) &&
    typeof r['created_at'] === 'string' &&
    (r['completed_at'] === null || typeof r['completed_at'] === 'string') &&
    (r['stop_reason'] === null || typeof r['stop_reason'] === 'string')
  );
}

describe('run lifecycle', () => {
  it('moves created -> running -> terminal as time passes, with Letta-shaped fields', async () => {
    const { sim, clock } = await start();
    const run = sim.createRun({ durationMs: 5000, outcome: 'completed', metadata: { job: 7 } });
    expect(run.id).toMatch(/^run-[0-9a-f-]{36}$/);
    expect(run.agentId).toMatch(/^agent-[0-9a-f-]{36}$/);
    expect(run.finishesAt).toBe(T0 + 5000);

    const created = await getJson(sim, `/v1/runs/${run.id}`);
    expect(created.status).toBe(200);
    expect(created.headers['content-type']).toBe('application/json');
    expect(created.body).toMatchObject({
      id: run.id,
      agent_id: run.agentId,
      status: 'created',
      created_at: '2025-10-17T21:53:00.000Z',
      completed_at: null,
      stop_reason: null,
      ttft_ns: null,
      total_duration_ns: null,
      background: true,
      conversation_id: null,
      base_template_id: null,
      metadata: { job: 7 },
      request_config: null,
      callback_url: null,
      callback_sent_at: null,
      callback_status_code: null,
      callback_error: null,
    });

    clock.t = T0 + 300;
    const running = await getJson(sim, `/v1/runs/${run.id}`);
    expect(running.body['status']).toBe('running');
    expect(running.body['completed_at']).toBeNull();
    expect(running.body['stop_reason']).toBeNull();
    expect(Number.isInteger(running.body['ttft_ns'])).toBe(true);

    clock.t = T0 + 4999;
    expect((await getJson(sim, `/v1/runs/${run.id}`)).body['status']).toBe('running');

    clock.t = T0 + 5000;
    const done = await getJson(sim, `/v1/runs/${run.id}`);
    expect(done.body['status']).toBe('completed');
    expect(done.body['completed_at']).toMatch(NAIVE_MICROS);
    expect(String(done.body['completed_at'])).toMatch(/^2025-10-17T21:53:05\.000\d{3}$/);
    expect(['end_turn', 'requires_approval', 'max_steps']).toContain(done.body['stop_reason']);
    expect(Number.isInteger(done.body['total_duration_ns'])).toBe(true);
    expect(done.body['total_duration_ns']).toBeGreaterThanOrEqual(5000 * 1e6);

    // Terminal answers are stable: later polls see the same body.
    clock.t = T0 + 60_000;
    expect((await getJson(sim, `/v1/runs/${run.id}`)).body).toEqual(done.body);
    expect(sim.pollsOf(run.id)).toBe(5);
  });

  it('reports stop_reason matching each outcome; never stays running', async () => {
    const { sim, clock } = await start();
    const ids: Record<string, string[]> = { completed: [], failed: [], cancelled: [], never: [] };
    for (const outcome of ['completed', 'failed', 'cancelled', 'never'] as const) {
      for (let i = 0; i < 20; i++) ids[outcome]!.push(sim.createRun({ durationMs: 1000, outcome }).id);
    }
    clock.t = T0 + 1_000_000;
    const allowed: Record<string, string[]> = {
      completed: ['end_turn', 'requires_approval', 'max_steps'],
      failed: ['error', 'llm_api_error'],
      cancelled: ['cancelled'],
    };
    const seen = new Set<string>();
    for (const [outcome, list] of Object.entries(ids)) {
      for (const id of list) {
        const { body } = await getJson(sim, `/v1/runs/${id}`);
        if (outcome === 'never') {
          expect(body).toMatchObject({ status: 'running', stop_reason: null, completed_at: null });
        } else {
          expect(body['status']).toBe(outcome);
          expect(allowed[outcome]).toContain(body['stop_reason']);
          expect(body['completed_at']).toMatch(NAIVE_MICROS);
          seen.add(String(body['stop_reason']));
        }
      }
    }
    expect(seen).toContain('end_turn');
    expect(seen).toContain('cancelled');
  });

  it('creates initialRuns at start and picks defaults from the configured range', async () => {
    const { sim } = await start({ initialRuns: 25, durationMs: [100, 200] });
    expect(sim.stats().runsCreated).toBe(25);
    const r = sim.createRun();
    expect(r.finishesAt! - T0).toBeGreaterThanOrEqual(100);
    expect(r.finishesAt! - T0).toBeLessThanOrEqual(200);
    expect(['completed', 'failed', 'cancelled']).toContain(r.outcome);
  });

  it('shows the Letta Cloud quirk (terminal status, null stop_reason/completed_at) at quirkRate 1', async () => {
    const { sim, clock } = await start({ faults: { quirkRate: 1 } });
    const run = sim.createRun({ durationMs: 10, outcome: 'failed' });
    clock.t = T0 + 10;
    const { body } = await getJson(sim, `/v1/runs/${run.id}`);
    expect(body).toMatchObject({ status: 'failed', stop_reason: null, completed_at: null });
    sim.setFaults({ quirkRate: 0 });
    const fixed = await getJson(sim, `/v1/runs/${run.id}`);
    expect(fixed.body['stop_reason']).not.toBeNull();
  });
});

describe('HTTP errors and auth', () => {
  it('answers 404 for unknown runs and routes, 400 for bad ids', async () => {
    const { sim } = await start();
    const unknown = 'run-0b7e2f4a-1c3d-4e5f-8a9b-0c1d2e3f4a5b';
    const missing = await getJson(sim, `/v1/runs/${unknown}`);
    expect(missing.status).toBe(404);
    expect(missing.body).toEqual({ detail: `Run not found with id=${unknown}` });
    expect(missing.headers['content-type']).toBe('application/json');

    // Letta checks the format before it looks: run- and a lowercase v4 UUID, nothing else.
    for (const bad of ['run-nope', 'run-1', 'run%20x', 'run.x', 'x'.repeat(129), unknown.toUpperCase(), unknown.replace('-4e5f', '-1e5f'), '%E0%A4%A']) {
      const r = await getJson(sim, `/v1/runs/${bad}`);
      expect(r.status, bad).toBe(400);
      expect(String(r.body['detail'])).toMatch(/^Invalid run ID format: .*\. Expected format: 'run-<uuid4>'$/);
    }
    const other = await getJson(sim, '/v1/agents');
    expect(other.status).toBe(404);
    expect(other.body).toEqual({ detail: 'Not Found' });
    const health = await getJson(sim, '/v1/health/');
    expect(health.status).toBe(200);
    expect(health.body).toMatchObject({ status: 'ok', version: expect.any(String) });
    expect((await get(sim, '/v1/health')).status).toBe(307);
  });

  it('requires the bearer key when one is set, and can turn it off', async () => {
    const { sim } = await start({ apiKey: 'sk-test' });
    const run = sim.createRun({ durationMs: 1000 });
    const none = await getJson(sim, `/v1/runs/${run.id}`);
    expect(none.status).toBe(401);
    expect(typeof none.body['detail']).toBe('string');
    expect((await get(sim, `/v1/runs/${run.id}`, { authorization: 'Bearer wrong' })).status).toBe(401);
    expect((await get(sim, `/v1/runs/${run.id}`, { authorization: 'Bearer sk-test' })).status).toBe(200);
    // Control endpoints stay open so tests can always steer the simulator.
    expect((await get(sim, '/v1/_sim/stats')).status).toBe(200);
    sim.setApiKey(undefined);
    expect((await get(sim, `/v1/runs/${run.id}`)).status).toBe(200);
  });
});

describe('control endpoints', () => {
  it('creates runs over HTTP and rejects bad bodies naming the field', async () => {
    const { sim, clock } = await start();
    const fixed = 'run-6f1c2d3e-4a5b-4c6d-9e8f-7a6b5c4d3e2f';
    const one = await post(sim, '/v1/_sim/runs', { id: fixed, duration_ms: 50, outcome: 'cancelled', metadata: { a: 1 } });
    expect(one.status).toBe(201);
    expect(one.body['runs']).toEqual([{ id: fixed, agent_id: expect.stringMatching(/^agent-/), outcome: 'cancelled', finishes_at: T0 + 50 }]);
    clock.t = T0 + 50;
    expect((await getJson(sim, `/v1/runs/${fixed}`)).body).toMatchObject({ status: 'cancelled', stop_reason: 'cancelled', metadata: { a: 1 } });

    const many = await post(sim, '/v1/_sim/runs', { count: 3 });
    expect(many.status).toBe(201);
    expect(many.body['runs']).toHaveLength(3);

    expect((await post(sim, '/v1/_sim/runs', { id: fixed })).status).toBe(409);
    for (const [body, field] of [
      [{ duration_ms: -1 }, 'duration_ms'],
      [{ outcome: 'exploded' }, 'outcome'],
      [{ count: 0 }, 'count'],
      [{ id: 'bad id' }, 'id'],
      [{ id: 'run-fixed_1' }, 'id'],
      [{ durationMs: 5 }, 'durationMs'],
      ['{not json', 'body'],
    ] as const) {
      const r = await post(sim, '/v1/_sim/runs', body);
      expect(r.status).toBe(400);
      expect(String(r.body['detail'])).toContain(field);
    }
    expect(sim.stats().runsCreated).toBe(4);
  });

  it('changes faults over HTTP and reports stats', async () => {
    const { sim } = await start({ faults: { errorRate: 1 } });
    const run = sim.createRun({ durationMs: 1000 });
    await get(sim, `/v1/runs/${run.id}`);
    await get(sim, `/v1/runs/${run.id}`);
    await get(sim, '/v1/runs/run-unknown');
    // Control endpoints are never faulted.
    const f = await post(sim, '/v1/_sim/faults', { errorRate: 0, latencyMs: 0 });
    expect(f.status).toBe(200);
    expect(f.body).toMatchObject({ errorRate: 0, retryAfterSeconds: 1 });
    expect((await post(sim, '/v1/_sim/faults', { hangRate: 2 })).body['detail']).toContain('hangRate');
    expect((await get(sim, `/v1/runs/${run.id}`)).status).toBe(200);

    const stats = await getJson(sim, '/v1/_sim/stats');
    expect(stats.status).toBe(200);
    expect(stats.body).toMatchObject({ runsCreated: 1, pollsByRun: 1 });
    expect(stats.body['requests']).toBe(7);
    expect(sim.pollsOf(run.id)).toBe(3);
    expect(sim.pollsOf('run-unknown')).toBe(0);
    const s = sim.stats();
    expect(s.byStatus['200']).toBe(3); // faults POST, last poll, and the stats GET (counted after its own snapshot)
    expect(s.byStatus['400']).toBe(1);
    expect((s.byStatus['500'] ?? 0) + (s.byStatus['502'] ?? 0) + (s.byStatus['503'] ?? 0)).toBe(3);
  });
});

describe('faults', () => {
  it('answers 429 with Retry-After, before 409, at rate 1', async () => {
    const { sim } = await start({ faults: { rateLimitRate: 1, conflictRate: 1, retryAfterSeconds: 3 } });
    const run = sim.createRun();
    const r = await getJson(sim, `/v1/runs/${run.id}`);
    expect(r.status).toBe(429);
    expect(r.headers['retry-after']).toBe('3');
    expect(typeof r.body['detail']).toBe('string');
    expect(sim.pollsOf(run.id)).toBe(1);
  });

  it('answers 409 database is locked with Retry-After: 1', async () => {
    const { sim } = await start({ faults: { conflictRate: 1 } });
    const r = await getJson(sim, '/v1/runs/run-anything');
    expect(r.status).toBe(409);
    expect(r.body).toEqual({ detail: 'database is locked' });
    expect(r.headers['retry-after']).toBe('1');
  });

  it('answers 5xx with a detail body at errorRate 1', async () => {
    const { sim } = await start({ faults: { errorRate: 1 } });
    const run = sim.createRun();
    const statuses = new Set<number>();
    for (let i = 0; i < 20; i++) {
      const r = await getJson(sim, `/v1/runs/${run.id}`);
      statuses.add(r.status);
      expect(typeof r.body['detail']).toBe('string');
    }
    for (const s of statuses) expect([500, 502, 503]).toContain(s);
    expect(statuses.size).toBeGreaterThan(1);
  });

  it('answers 200 with bodies that are not valid Run JSON at malformedRate 1', async () => {
    const { sim } = await start({ faults: { malformedRate: 1 } });
    const run = sim.createRun();
    const kinds = new Set<string>();
    for (let i = 0; i < 30; i++) {
      const r = await get(sim, `/v1/runs/${run.id}`);
      expect(r.status).toBe(200);
      expect(isRunBody(r.text)).toBe(false);
      const ct = String(r.headers['content-type']);
      kinds.add(ct.startsWith('text/html') ? 'html' : (() => { try { JSON.parse(r.text); return 'types'; } catch { return 'truncated'; } })());
    }
    expect(kinds).toEqual(new Set(['html', 'types', 'truncated']));
    // Sanity: the same run answers a valid body once the fault is off.
    sim.setFaults({ malformedRate: 0 });
    expect(isRunBody((await get(sim, `/v1/runs/${run.id}`)).text)).toBe(true);
  });

  it('adds latency before answering', async () => {
    const { sim } = await start({ faults: { latencyMs: 60 } });
    const run = sim.createRun();
    const t = performance.now();
    expect((await get(sim, `/v1/runs/${run.id}`)).status).toBe(200);
    expect(performance.now() - t).toBeGreaterThanOrEqual(55);
  });

  it('leaves hung requests open until close() cuts them promptly', async () => {
    const sim = await startSimulator({ port: 0, faults: { hangRate: 1, latencyMs: 0 } });
    const run = sim.createRun();
    const pending = request(`${sim.url}/v1/runs/${run.id}`).then(
      () => 'answered',
      () => 'cut',
    );
    while (sim.stats().requests < 1) await new Promise((r) => setTimeout(r, 5));
    expect(sim.stats().byStatus['hung']).toBe(1);
    const t = performance.now();
    await sim.close();
    expect(await pending).toBe('cut');
    expect(performance.now() - t).toBeLessThan(1000);
  });

  it('close() does not wait out pending latency', async () => {
    const sim = await startSimulator({ port: 0, faults: { latencyMs: 30_000 } });
    const pending = request(`${sim.url}/v1/runs/run-x`).then(
      () => 'answered',
      () => 'cut',
    );
    while (sim.stats().requests < 1) await new Promise((r) => setTimeout(r, 5));
    const t = performance.now();
    await sim.close();
    expect(await pending).toBe('cut');
    expect(performance.now() - t).toBeLessThan(1000);
  });
});

describe('options validation', () => {
  it('rejects bad options with ERR_USAGE naming the option', async () => {
    const cases: [SimulatorOptions, string][] = [
      [{ faults: { errorRate: 1.5 } }, 'errorRate'],
      [{ faults: { latencyMs: -1 } }, 'latencyMs'],
      [{ faults: { retryAfterSeconds: 0.5 } }, 'retryAfterSeconds'],
      [{ port: 70000 }, 'port'],
      [{ durationMs: [5, 1] }, 'durationMs'],
      [{ initialRuns: -1 }, 'initialRuns'],
      [{ outcomes: { completed: 0, failed: 0, cancelled: 0 } }, 'outcomes'],
    ];
    for (const [options, name] of cases) {
      const err = await startSimulator({ port: 0, ...options }).then(
        (s) => (open.push(s), undefined),
        (e: unknown) => e,
      );
      expect(isDaemonError(err, 'ERR_USAGE'), name).toBe(true);
      expect((err as Error).message).toContain(name);
    }
    const { sim } = await start();
    expect(() => sim.setFaults({ hangRate: -0.1 })).toThrow(/hangRate/);
    expect(() => sim.createRun({ id: 'has space' })).toThrow(/id/);
  });
});

describe('parseSimulatorArgs', () => {
  it('accepts the documented flags', () => {
    const opts = parseSimulatorArgs(
      [
        '--port', '9000', '--host', '0.0.0.0', '--initial-runs', '50', '--duration-ms', '100-500',
        '--error-rate', '0.1', '--rate-limit-rate', '0.05', '--retry-after', '2', '--conflict-rate', '0.02',
        '--latency-ms', '20', '--hang-rate', '0.01', '--malformed-rate', '.03', '--quirk-rate', '1',
        '--api-key-env', 'SIM_KEY',
      ],
      { SIM_KEY: 'sk-secret' },
    );
    expect(opts).toEqual({
      port: 9000,
      host: '0.0.0.0',
      initialRuns: 50,
      durationMs: [100, 500],
      apiKey: 'sk-secret',
      faults: {
        errorRate: 0.1,
        rateLimitRate: 0.05,
        retryAfterSeconds: 2,
        conflictRate: 0.02,
        latencyMs: 20,
        hangRate: 0.01,
        malformedRate: 0.03,
        quirkRate: 1,
      },
    });
    expect(parseSimulatorArgs([], {})).toEqual({ initialRuns: 0 });
    expect(parseSimulatorArgs(['--duration-ms', '750'], {}).durationMs).toEqual([750, 750]);
    expect(simulatorUsage).toContain('--api-key-env');
  });

  it('rejects bad flags and values naming the flag and value', () => {
    const cases: [string[], RegExp][] = [
      [['--port', 'abc'], /--port.*abc/],
      [['--port', '70000'], /--port.*70000/],
      [['--error-rate', '1.5'], /--error-rate.*1\.5/],
      [['--hang-rate', '-0.1'], /--hang-rate/],
      [['--duration-ms', '500-100'], /--duration-ms.*500-100/],
      [['--duration-ms', 'soon'], /--duration-ms.*soon/],
      [['--retry-after', '1.5'], /--retry-after.*1\.5/],
      [['--latency-ms', 'x'], /--latency-ms.*x/],
      [['--prot', '1'], /--prot/],
      [['--api-key-env', 'MISSING'], /--api-key-env.*MISSING/],
      [['--api-key-env', 'bad-name'], /--api-key-env.*bad-name/],
      [['extra'], /extra/],
    ];
    for (const [argv, pattern] of cases) {
      let caught: unknown;
      try {
        parseSimulatorArgs(argv, {});
      } catch (err) {
        caught = err;
      }
      expect(isDaemonError(caught, 'ERR_USAGE'), argv.join(' ')).toBe(true);
      expect((caught as Error).message).toMatch(pattern);
    }
  });
});

describe('GET /v1/runs/ (the list)', () => {
  it('active runs newest first; active applies only without statuses; statuses repeats; limit 1..1000 or 422; the list lags retrieve', async () => {
    const { sim, clock } = await start({ faults: { listLagMs: 1000 } });
    const a = sim.createRun({ durationMs: 5000, outcome: 'completed' });
    clock.t += 10;
    const b = sim.createRun({ durationMs: 500, outcome: 'failed' });
    clock.t += 10;
    const c = sim.createRun({ durationMs: 100_000, outcome: 'completed' });
    const ids = async (q: string) => ((await getJson(sim, `/v1/runs/?${q}`)).body as unknown as { id: string }[]).map((r) => r.id);
    expect(await ids('active=true&limit=1000')).toEqual([c.id, b.id, a.id]);
    expect(await ids('active=true&limit=2')).toEqual([c.id, b.id]);
    expect(await ids('active=true&order=asc')).toEqual([a.id, b.id, c.id]);
    // b ended 500 ms after it started; retrieve says so at once, the list only 1 s later.
    clock.t += 600;
    expect((await getJson(sim, `/v1/runs/${b.id}`)).body['status']).toBe('failed');
    expect(await ids('active=true')).toContain(b.id);
    clock.t += 1000;
    expect(await ids('active=true')).toEqual([c.id, a.id]);
    expect(await ids('statuses=failed')).toEqual([b.id]);
    expect(await ids('statuses=failed&statuses=running')).toEqual([c.id, b.id, a.id]);
    // active is ignored when statuses is given.
    expect(await ids('active=true&statuses=failed')).toEqual([b.id]);
    for (const bad of ['limit=0', 'limit=1001', 'limit=x', 'order=sideways']) {
      const r = await getJson(sim, `/v1/runs/?${bad}`);
      expect(r.status, bad).toBe(422);
      expect(Array.isArray(r.body['detail'])).toBe(true);
    }
    expect((await get(sim, '/v1/runs?active=true')).status).toBe(307);
    expect(sim.stats().listRequests).toBe(12);
  });
});

describe("Letta's callback", () => {
  it('POSTs {run_id, status, completed_at, metadata} once when the run ends, records the outcome on the run, and drops a share on purpose', async () => {
    const received: unknown[] = [];
    const { createServer } = await import('node:http');
    const hook = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        received.push(JSON.parse(body));
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', () => r()));
    const url = `http://127.0.0.1:${(hook.address() as { port: number }).port}/cb`;
    try {
      const sim = await startSimulator({ port: 0, random: seeded(3) });
      open.push(sim);
      const run = sim.createRun({ durationMs: 50, outcome: 'failed', metadata: { k: 1 }, callbackUrl: url });
      sim.createRun({ durationMs: 50, outcome: 'never', callbackUrl: url });
      await new Promise((r) => setTimeout(r, 400));
      expect(received).toEqual([{ run_id: run.id, status: 'failed', completed_at: expect.stringMatching(NAIVE_MICROS), metadata: { k: 1 } }]);
      const body = (await getJson(sim, `/v1/runs/${run.id}`)).body;
      expect(body).toMatchObject({ callback_url: url, callback_status_code: 204, callback_error: null, callback_sent_at: expect.stringMatching(NAIVE_MICROS) });
      expect(sim.stats().callbacks).toEqual({ sent: 1, dropped: 0, failed: 0 });
      sim.setFaults({ callbackDropRate: 1 });
      sim.createRun({ durationMs: 10, outcome: 'completed', callbackUrl: url });
      await new Promise((r) => setTimeout(r, 200));
      expect(received).toHaveLength(1);
      expect(sim.stats().callbacks.dropped).toBe(1);
    } finally {
      await new Promise<void>((r) => hook.close(() => r()));
    }
  });
});
