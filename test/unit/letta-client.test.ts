import { afterEach, describe, expect, it } from 'vitest';
import { MockAgent } from 'undici';
import type { Clock } from '../../src/clock.ts';
import { isDaemonError } from '../../src/errors.ts';
import type { DaemonError } from '../../src/errors.ts';
import { makeLettaClient } from '../../src/letta/client.ts';
import type { LettaClient, LettaClientOptions } from '../../src/letta/client.ts';

const BASE = 'http://letta.test';
const T0 = Date.parse('2025-10-17T21:53:00.000Z');

interface Answer {
  status: number;
  body?: string | object;
  headers?: Record<string, string>;
  delayMs?: number;
  /** Keep answering this way for every later request. */
  persist?: boolean;
}

interface Call {
  path: string;
  headers: Record<string, string>;
}

const agents: MockAgent[] = [];
afterEach(async () => {
  await Promise.all(agents.splice(0).map((a) => a.close()));
});

/** MockAgent hands the reply callback the headers object the client passed to `request`. */
function lowerHeaders(h: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (h && typeof h === 'object') {
    for (const [k, v] of Object.entries(h)) out[k.toLowerCase()] = String(v);
  }
  return out;
}

/**
 * A client over a MockAgent that answers, in order, with `answers` (any path, so a request that
 * escapes /v1/runs/ is recorded rather than refused), and a clock whose sleep records and returns.
 */
function setup(answers: Answer[], overrides: Partial<LettaClientOptions> = {}) {
  const agent = new MockAgent();
  agent.disableNetConnect();
  agents.push(agent);
  const pool = agent.get(BASE);
  const calls: Call[] = [];
  for (const a of answers) {
    const scope = pool.intercept({ path: () => true, method: 'GET' }).reply((opts) => {
      calls.push({ path: opts.path, headers: lowerHeaders(opts.headers) });
      const data = a.body === undefined ? '' : typeof a.body === 'string' ? a.body : JSON.stringify(a.body);
      return { statusCode: a.status, data, responseOptions: { headers: { 'content-type': 'application/json', ...a.headers } } };
    });
    if (a.delayMs !== undefined) scope.delay(a.delayMs);
    if (a.persist) scope.persist();
  }
  const sleeps: number[] = [];
  const clock: Clock = {
    now: () => T0,
    sleep: async (ms, signal) => {
      signal?.throwIfAborted();
      sleeps.push(ms);
    },
  };
  const attemptErrors: DaemonError[] = [];
  const client: LettaClient = makeLettaClient({
    baseUrl: BASE,
    apiKey: 'sk-let-test-key',
    requestTimeoutMs: 5000,
    maxResponseBytes: 64 * 1024,
    retries: 3,
    retryMinMs: 1,
    retryMaxMs: 5,
    retryAfterCapMs: 5000,
    clock,
    dispatcher: agent,
    onAttemptError: (err) => attemptErrors.push(err),
    ...overrides,
  });
  return { client, calls, sleeps, attemptErrors };
}

const signal = () => new AbortController().signal;

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject');
}

const RUN = {
  id: 'run-123e4567-e89b-12d3-a456-426614174000',
  agent_id: 'agent-1',
  status: 'completed',
  stop_reason: 'end_turn',
  created_at: '2025-10-17T21:53:00.000000',
  completed_at: '2025-10-17T21:53:05.123456',
  metadata: { team: 'a' },
};

describe('makeLettaClient request', () => {
  it('sends the API key as a bearer token', async () => {
    const { client, calls } = setup([{ status: 200, body: RUN }]);
    await client.getRun('run-1', signal());
    expect(calls).toHaveLength(1);
    expect(calls[0]?.headers['authorization']).toBe('Bearer sk-let-test-key');
  });

  it('sends no authorization header without an API key', async () => {
    const { client, calls } = setup([{ status: 200, body: RUN }], { apiKey: undefined });
    await client.getRun('run-1', signal());
    expect(calls[0]?.headers).not.toHaveProperty('authorization');
  });

  it('requests /v1/runs/{id}, with no double slash when the base URL ends in one', async () => {
    const { client, calls } = setup([{ status: 200, body: RUN }], { baseUrl: `${BASE}/` });
    await client.getRun('run-abc_DEF-1', signal());
    expect(calls[0]?.path).toBe('/v1/runs/run-abc_DEF-1');
  });

  it.each(['../admin', '..', 'run-1/../../admin', 'a b?c=1#frag', '100%', 'é'])(
    'never sends a request for the run id %j, which could leave /v1/runs/',
    async (id) => {
      const { client, calls } = setup([{ status: 200, body: RUN }]);
      await expect(client.getRun(id, signal())).resolves.toEqual({ kind: 'bad_id', status: 400 });
      expect(calls).toHaveLength(0);
    },
  );
});

describe('makeLettaClient 200 answers', () => {
  it('parses a Run', async () => {
    const { client } = setup([{ status: 200, body: RUN }]);
    const got = await client.getRun(RUN.id, signal());
    expect(got).toEqual({ kind: 'found', run: RUN });
  });

  it('accepts a Run with every nullable field null and only agent_id set', async () => {
    const nullHeavy = {
      id: null,
      agent_id: 'agent-1',
      status: null,
      stop_reason: null,
      created_at: null,
      completed_at: null,
      conversation_id: null,
      base_template_id: null,
      background: null,
      metadata: null,
      request_config: null,
      callback_url: null,
      callback_sent_at: null,
      callback_status_code: null,
      callback_error: null,
      ttft_ns: null,
      total_duration_ns: null,
    };
    const { client } = setup([{ status: 200, body: nullHeavy }]);
    expect(await client.getRun('run-1', signal())).toEqual({ kind: 'found', run: nullHeavy });
  });

  it('accepts a Run with nothing but agent_id', async () => {
    const { client } = setup([{ status: 200, body: { agent_id: 'agent-1' } }]);
    expect(await client.getRun('run-1', signal())).toEqual({ kind: 'found', run: { agent_id: 'agent-1' } });
  });

  it('keeps unknown fields, an unknown status and an unknown stop reason', async () => {
    const drifted = { ...RUN, status: 'expired', stop_reason: 'brand_new_reason', new_field: { nested: [1, 2] }, total_cost: 0.25 };
    const { client } = setup([{ status: 200, body: drifted }]);
    expect(await client.getRun('run-1', signal())).toEqual({ kind: 'found', run: drifted });
  });

  it('keeps Letta callback outcome fields on the run', async () => {
    const withCallback = { ...RUN, callback_url: 'https://x.test/cb', callback_sent_at: '2025-10-17T21:53:06', callback_status_code: 500, callback_error: 'boom' };
    const { client } = setup([{ status: 200, body: withCallback }]);
    expect(await client.getRun('run-1', signal())).toEqual({ kind: 'found', run: withCallback });
  });

  it('accepts a naive completed_at and returns it unchanged', async () => {
    const { client } = setup([{ status: 200, body: { agent_id: 'agent-1', status: 'completed', completed_at: '2025-10-17T21:53:05.123456' } }]);
    const got = await client.getRun('run-1', signal());
    expect(got.kind).toBe('found');
    expect(got.kind === 'found' && got.run.completed_at).toBe('2025-10-17T21:53:05.123456');
  });

  it('rejects a non-JSON 200 body with ERR_API_SCHEMA and does not retry it', async () => {
    const { client, calls } = setup([{ status: 200, body: '<html>bad gateway</html>', persist: true }]);
    const err = await rejection(client.getRun('run-1', signal()));
    expect(isDaemonError(err, 'ERR_API_SCHEMA')).toBe(true);
    expect(calls).toHaveLength(1);
  });

  it('rejects a JSON 200 body that is not a Run (no agent_id) with ERR_API_SCHEMA and does not retry it', async () => {
    const { client, calls } = setup([{ status: 200, body: { id: 'run-1', status: 'completed' }, persist: true }]);
    const err = await rejection(client.getRun('run-1', signal()));
    expect(isDaemonError(err, 'ERR_API_SCHEMA')).toBe(true);
    expect(calls).toHaveLength(1);
  });

  it('rejects a body over maxResponseBytes (declared content-length) with ERR_API_BODY_TOO_LARGE', async () => {
    const big = JSON.stringify({ ...RUN, padding: 'x'.repeat(2000) });
    const { client, calls } = setup([{ status: 200, body: big, headers: { 'content-length': String(Buffer.byteLength(big)) }, persist: true }], {
      maxResponseBytes: 1000,
    });
    const err = await rejection(client.getRun('run-1', signal()));
    expect(isDaemonError(err, 'ERR_API_BODY_TOO_LARGE')).toBe(true);
    expect(calls).toHaveLength(1);
  });

  it('rejects a body over maxResponseBytes with no content-length with ERR_API_BODY_TOO_LARGE', async () => {
    const big = JSON.stringify({ ...RUN, padding: 'x'.repeat(2000) });
    const { client } = setup([{ status: 200, body: big, persist: true }], { maxResponseBytes: 1000 });
    const err = await rejection(client.getRun('run-1', signal()));
    expect(isDaemonError(err, 'ERR_API_BODY_TOO_LARGE')).toBe(true);
  });

  it('accepts a body of exactly maxResponseBytes', async () => {
    const body = JSON.stringify({ agent_id: 'agent-1' });
    const { client } = setup([{ status: 200, body }], { maxResponseBytes: Buffer.byteLength(body) });
    expect(await client.getRun('run-1', signal())).toEqual({ kind: 'found', run: { agent_id: 'agent-1' } });
  });
});

describe('makeLettaClient error statuses', () => {
  it('maps 404 to not_found without retrying', async () => {
    const { client, calls } = setup([{ status: 404, body: { detail: 'Run not found' }, persist: true }]);
    expect(await client.getRun('run-1', signal())).toEqual({ kind: 'not_found' });
    expect(calls).toHaveLength(1);
  });

  it.each([400, 422])('maps %i to bad_id without retrying', async (status) => {
    const { client, calls } = setup([{ status, body: { detail: 'bad id' }, persist: true }]);
    expect(await client.getRun('run-1', signal())).toEqual({ kind: 'bad_id', status });
    expect(calls).toHaveLength(1);
  });

  it.each([401, 403])('maps %i to auth without retrying', async (status) => {
    const { client, calls } = setup([{ status, body: { detail: 'no' }, persist: true }]);
    expect(await client.getRun('run-1', signal())).toEqual({ kind: 'auth', status });
    expect(calls).toHaveLength(1);
  });

  it('throws ERR_API_STATUS for an unexpected status without retrying it', async () => {
    const { client, calls } = setup([{ status: 418, body: 'teapot', persist: true }]);
    const err = await rejection(client.getRun('run-1', signal()));
    expect(isDaemonError(err, 'ERR_API_STATUS')).toBe(true);
    expect((err as DaemonError).status).toBe(418);
    expect(calls).toHaveLength(1);
  });
});

describe('makeLettaClient retries', () => {
  it('retries a 503 and returns the run found on the next attempt', async () => {
    const { client, calls } = setup([{ status: 503, body: 'busy' }, { status: 200, body: RUN }]);
    expect(await client.getRun('run-1', signal())).toEqual({ kind: 'found', run: RUN });
    expect(calls).toHaveLength(2);
  });

  it.each([408, 409, 425, 429, 500, 502, 504])('retries a %i', async (status) => {
    const { client, calls } = setup([{ status }, { status: 200, body: RUN }]);
    expect(await client.getRun('run-1', signal())).toEqual({ kind: 'found', run: RUN });
    expect(calls).toHaveLength(2);
  });

  it('retries a connection reset', async () => {
    const agent = new MockAgent();
    agent.disableNetConnect();
    agents.push(agent);
    const pool = agent.get(BASE);
    pool.intercept({ path: '/v1/runs/run-1' }).replyWithError(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
    pool.intercept({ path: '/v1/runs/run-1' }).reply(200, RUN);
    const client = makeLettaClient({
      baseUrl: BASE,
      requestTimeoutMs: 5000,
      maxResponseBytes: 65536,
      retries: 2,
      retryMinMs: 1,
      retryMaxMs: 5,
      retryAfterCapMs: 5000,
      clock: { now: () => T0, sleep: async () => {} },
      dispatcher: agent,
    });
    expect(await client.getRun('run-1', signal())).toEqual({ kind: 'found', run: RUN });
    expect(agent.pendingInterceptors()).toHaveLength(0);
  });

  it('waits out a 429 Retry-After through the clock before retrying', async () => {
    const { client, calls, sleeps } = setup([{ status: 429, headers: { 'retry-after': '1' } }, { status: 200, body: RUN }]);
    expect(await client.getRun('run-1', signal())).toEqual({ kind: 'found', run: RUN });
    expect(calls).toHaveLength(2);
    // p-retry's own backoff (1-5 ms here) counts toward the wait; the clock covers the rest.
    expect(sleeps).toHaveLength(1);
    expect(sleeps[0]).toBeGreaterThanOrEqual(1000 - 5);
    expect(sleeps[0]).toBeLessThanOrEqual(1000);
  });

  it('does not retry a Retry-After beyond retryAfterCapMs and throws it with retryAfterMs', async () => {
    const { client, calls, sleeps } = setup([{ status: 429, headers: { 'retry-after': '60' }, persist: true }], { retryAfterCapMs: 5000 });
    const err = await rejection(client.getRun('run-1', signal()));
    expect(isDaemonError(err, 'ERR_API_STATUS')).toBe(true);
    expect((err as DaemonError).status).toBe(429);
    expect((err as DaemonError).retryAfterMs).toBe(60_000);
    expect(calls).toHaveLength(1);
    expect(sleeps).toEqual([]);
  });

  it('throws ERR_API_STATUS after retries + 1 attempts of a persistent 503', async () => {
    const { client, calls, attemptErrors } = setup([{ status: 503, body: 'down', persist: true }], { retries: 2 });
    const err = await rejection(client.getRun('run-1', signal()));
    expect(isDaemonError(err, 'ERR_API_STATUS')).toBe(true);
    expect((err as DaemonError).status).toBe(503);
    expect(calls).toHaveLength(3);
    expect(attemptErrors.map((e) => e.code)).toEqual(['ERR_API_STATUS', 'ERR_API_STATUS', 'ERR_API_STATUS']);
  });

  it('makes exactly one attempt with retries 0', async () => {
    const { client, calls } = setup([{ status: 503, persist: true }], { retries: 0 });
    const err = await rejection(client.getRun('run-1', signal()));
    expect(isDaemonError(err, 'ERR_API_STATUS')).toBe(true);
    expect(calls).toHaveLength(1);
  });
});

describe('makeLettaClient time limits and cancellation', () => {
  it('throws ERR_API_TIMEOUT when the API does not answer within requestTimeoutMs', async () => {
    const { client } = setup([{ status: 200, body: RUN, delayMs: 2000, persist: true }], { requestTimeoutMs: 20, retries: 0 });
    const err = await rejection(client.getRun('run-1', signal()));
    expect(isDaemonError(err, 'ERR_API_TIMEOUT')).toBe(true);
  });

  it('rejects with the abort reason when the signal is already aborted', async () => {
    const { client } = setup([{ status: 200, body: RUN, persist: true }]);
    const ac = new AbortController();
    const reason = new Error('stopping');
    ac.abort(reason);
    await expect(client.getRun('run-1', ac.signal)).rejects.toBe(reason);
  });

  it('rejects with the abort reason when the signal aborts while the request is in flight', async () => {
    const { client } = setup([{ status: 200, body: RUN, delayMs: 2000, persist: true }], { requestTimeoutMs: 60_000 });
    const ac = new AbortController();
    const reason = new Error('stopping');
    const pending = client.getRun('run-1', ac.signal);
    ac.abort(reason);
    await expect(pending).rejects.toBe(reason);
  });

  it('rejects with the abort reason when the signal aborts during a Retry-After wait', async () => {
    const ac = new AbortController();
    const reason = new Error('stopping');
    const { client, calls } = setup([{ status: 429, headers: { 'retry-after': '1' } }, { status: 200, body: RUN }], {
      clock: {
        now: () => T0,
        sleep: async (_ms, s) => {
          ac.abort(reason);
          s?.throwIfAborted();
        },
      },
    });
    await expect(client.getRun('run-1', ac.signal)).rejects.toBe(reason);
    expect(calls).toHaveLength(1);
  });
});
