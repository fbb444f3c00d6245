import type { IncomingMessage, ServerResponse } from 'node:http';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import type { Daemon } from '../src/daemon.ts';
import { makeLogger } from '../src/log.ts';
import { keys, readEvents, startApiIn, startDaemon, testConfig, waitFor, useSuite } from './kit/harness.ts';

/**
 * Bad answers from the Letta side: non-JSON, truncated JSON, wrong types, HTML error pages, a
 * lying `content-encoding: gzip`, a 50 MB body. The daemon runs in-process against a local
 * server whose answer the test switches. For each bad answer: the poll is classified as an
 * error (metrics and the error code in the log), the run stays watched (in P:due, no
 * event) for as long as the server answers badly, and once it answers properly the run gets
 * exactly one event. While the 50 MB body is served again and again, the daemon's memory stays
 * bounded (the client stops reading at letta.maxResponseBytes, 1 MiB by default).
 */

const RUN_ID = 'run-fuzz-response';
const MiB = 1024 * 1024;
const HUGE = 50 * MiB;

const { redis, cleanup } = useSuite();

function runJson(status: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    id: RUN_ID,
    agent_id: 'agent-1',
    status,
    stop_reason: status === 'running' ? null : 'end_turn',
    created_at: '2026-01-01T00:00:00.000Z',
    completed_at: status === 'running' ? null : '2026-01-01T00:00:05.000000',
    ...extra,
  });
}

const GOOD = runJson('completed');

type Answer = (req: IncomingMessage, res: ServerResponse) => void;

function plain(status: number, body: string, headers: Record<string, string> = { 'content-type': 'application/json' }): Answer {
  return (_req, res) => {
    res.writeHead(status, { ...headers, 'content-length': String(Buffer.byteLength(body)) });
    res.end(body);
  };
}

interface HugeResponse {
  /** Bytes handed to the socket before the client hung up (or all of them). */
  sent: number;
  complete: boolean;
}

/**
 * A 50 MB body that is, in full, a valid completed Run: were the client to read it all, the run
 * would end. Streamed in 64 KiB chunks with back-pressure, so the server holds one chunk.
 */
function huge(declareLength: boolean, log: HugeResponse[]): Answer {
  const head = Buffer.from(`{"id":"${RUN_ID}","agent_id":"agent-1","status":"completed","pad":"`);
  const tail = Buffer.from('"}');
  const chunk = Buffer.alloc(64 * 1024, 'a');
  return (_req, res) => {
    const rec: HugeResponse = { sent: 0, complete: false };
    log.push(rec);
    res.writeHead(200, { 'content-type': 'application/json', ...(declareLength ? { 'content-length': String(HUGE) } : {}) });
    let closed = false;
    res.on('close', () => {
      closed = true;
    });
    const padding = HUGE - head.length - tail.length;
    let padded = 0;
    res.write(head);
    rec.sent = head.length;
    const pump = () => {
      while (!closed && padded < padding) {
        const n = Math.min(chunk.length, padding - padded);
        padded += n;
        rec.sent += n;
        if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
          res.once('drain', pump);
          return;
        }
      }
      if (!closed) {
        rec.sent += tail.length;
        rec.complete = true;
        res.end(tail);
      }
    };
    pump();
  };
}

interface Api {
  url: string;
  requests: number;
  set(answer: Answer): void;
}

async function api(initial: Answer): Promise<Api> {
  let answer = initial;
  const state: Api = { url: '', requests: 0, set: (a) => (answer = a) };
  const server = await startApiIn(cleanup, (req, res) => {
    state.requests++;
    if (req.url !== `/v1/runs/${RUN_ID}`) {
      res.writeHead(404).end();
      return;
    }
    answer(req, res);
  });
  state.url = server.url;
  return state;
}

interface Watched {
  daemon: Daemon;
  prefix: string;
  /** The daemon's log lines (warn and up), parsed. */
  logs: Record<string, unknown>[];
}

async function watch(server: Api): Promise<Watched> {
  const logs: Record<string, unknown>[] = [];
  const log = makeLogger('warn', { destination: { write: (s: string) => void logs.push(JSON.parse(s) as Record<string, unknown>) } });
  const config = testConfig({ LETTA_BASE_URL: server.url, WATCHER_SHUTDOWN_GRACE_MS: '500' });
  const daemon = await startDaemon(cleanup, config, { log });
  const prefix = config.redis.keyPrefix;
  await redis.lpush(keys(prefix).intake, RUN_ID);
  return { daemon, prefix, logs };
}

async function metric(daemon: Daemon, name: string, labels: string): Promise<number> {
  const text = await daemon.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** Error codes of the failed polls the daemon logged ("poll failed; the run stays watched"). */
function failedPollCodes(logs: readonly Record<string, unknown>[]): string[] {
  return logs.filter((l) => l['msg'] === 'poll failed; the run stays watched').map((l) => String((l['err'] as { code?: unknown } | undefined)?.code));
}

async function expectStillWatched(prefix: string): Promise<void> {
  const k = keys(prefix);
  const events = await readEvents(redis, prefix);
  expect({
    inSchedule: (await redis.zscore(k.due, RUN_ID)) !== null,
    runState: await redis.hexists(k.runs, RUN_ID),
    events: events.map((e) => `${e.event.type} ${e.event.data.status}`),
    deadLetters: await redis.llen(k.dead),
  }).toEqual({ inSchedule: true, runState: 1, events: [], deadLetters: 0 });
}

/** The server answers properly: exactly one event, and the run is no longer watched. */
async function expectOneEventOnceFixed(server: Api, w: Watched): Promise<void> {
  server.set(plain(200, GOOD));
  const k = keys(w.prefix);
  await waitFor(async () => (await redis.xlen(k.events)) >= 1 && (await redis.zcard(k.due)) === 0, { timeoutMs: 10_000 });
  const before = server.requests;
  // Keep looking a little: no second event, no further polls of the finished run.
  await waitFor(async () => (await readEvents(redis, w.prefix)).length === 1 && server.requests === before, { timeoutMs: 2000 });
  const events = await readEvents(redis, w.prefix);
  expect(events.map((e) => [e.event.data.run_id, e.event.type])).toEqual([[RUN_ID, 'run.completed']]);
  expect(await redis.hexists(k.runs, RUN_ID)).toBe(0);
}

interface Case {
  name: string;
  answer: () => Answer;
  /** DaemonError code of the failed poll. */
  code: string;
  /** `class` label of letta_watcher_api_errors_total, when the attempt is counted there. */
  apiClass?: string;
}

const CASES: Case[] = [
  { name: 'non-JSON text', answer: () => plain(200, 'OK, your run is fine', { 'content-type': 'text/plain' }), code: 'ERR_API_SCHEMA' },
  { name: 'truncated JSON', answer: () => plain(200, GOOD.slice(0, Math.floor(GOOD.length / 2))), code: 'ERR_API_SCHEMA' },
  { name: 'empty body', answer: () => plain(200, ''), code: 'ERR_API_SCHEMA' },
  { name: 'JSON null', answer: () => plain(200, 'null'), code: 'ERR_API_SCHEMA' },
  { name: 'a JSON array of runs', answer: () => plain(200, `[${GOOD}]`), code: 'ERR_API_SCHEMA' },
  { name: 'status as a number', answer: () => plain(200, runJson('completed', { status: 7 })), code: 'ERR_API_SCHEMA' },
  {
    name: 'agent_id missing (status completed)',
    answer: () => plain(200, JSON.stringify({ id: RUN_ID, status: 'completed', stop_reason: 'end_turn' })),
    code: 'ERR_API_SCHEMA',
  },
  { name: 'agent_id as a number', answer: () => plain(200, runJson('completed', { agent_id: 42 })), code: 'ERR_API_SCHEMA' },
  {
    name: 'HTML error page with 200',
    answer: () => plain(200, '<!DOCTYPE html><html><body><h1>Something went wrong</h1></body></html>', { 'content-type': 'text/html' }),
    code: 'ERR_API_SCHEMA',
  },
  {
    name: 'HTML error page with 502',
    answer: () => plain(502, '<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>', { 'content-type': 'text/html' }),
    code: 'ERR_API_STATUS',
    apiClass: '502',
  },
  {
    // The body is plain JSON of a finished run, but the header says it is gzip: what arrives is
    // not what the header describes, so it cannot be trusted as a Run.
    name: 'a lying content-encoding: gzip on plain JSON',
    answer: () => plain(200, GOOD, { 'content-type': 'application/json', 'content-encoding': 'gzip' }),
    code: 'ERR_API_SCHEMA',
  },
  { name: '50 MB body, content-length declared', answer: () => huge(true, []), code: 'ERR_API_BODY_TOO_LARGE' },
  { name: '50 MB body, chunked', answer: () => huge(false, []), code: 'ERR_API_BODY_TOO_LARGE' },
];

describe('malformed answers from the Letta API', () => {
  it.each(CASES)('$name: classified as an error, the run stays watched, then exactly one event', async (c) => {
    const server = await api(c.answer());
    const w = await watch(server);
    const POLLS = 3;
    // Done waiting once three polls failed, or as soon as an event shows up (which is wrong).
    const k = keys(w.prefix);
    await waitFor(async () => (await metric(w.daemon, 'letta_watcher_polls_total', 'outcome="error"')) >= POLLS || (await redis.xlen(k.events)) > 0, {
      timeoutMs: 15_000,
      describe: async () =>
        `requests ${server.requests}, run watched ${(await redis.zscore(k.due, RUN_ID)) !== null}; logs ${JSON.stringify(w.logs.slice(-3))}`,
    });
    await expectStillWatched(w.prefix);

    const codes = failedPollCodes(w.logs);
    expect(codes.length).toBeGreaterThanOrEqual(POLLS);
    expect(new Set(codes)).toEqual(new Set([c.code]));
    for (const outcome of ['terminal', 'pending', 'not_found', 'bad_id', 'auth']) {
      expect(await metric(w.daemon, 'letta_watcher_polls_total', `outcome="${outcome}"`), outcome).toBe(0);
    }
    if (c.apiClass !== undefined) {
      expect(await metric(w.daemon, 'letta_watcher_api_errors_total', `class="${c.apiClass}"`)).toBeGreaterThanOrEqual(POLLS);
    }

    await expectOneEventOnceFixed(server, w);
    expect(w.daemon.state).toBe('running');
  });

  it.each([
    { name: 'a body that is not a Run', answer: () => plain(200, 'not json'), apiClass: 'ERR_API_SCHEMA' },
    { name: 'a body over the size cap', answer: () => huge(false, []), apiClass: 'ERR_API_BODY_TOO_LARGE' },
  ])('$name is counted in letta_watcher_api_errors_total with class $apiClass', async (c) => {
    // docs/operations.md: letta_watcher_api_errors_total counts failed API attempts by "the HTTP status or
    // error code". These attempts got a 200, and failed anyway: the code says why.
    const server = await api(c.answer());
    const w = await watch(server);
    await waitFor(async () => (await metric(w.daemon, 'letta_watcher_polls_total', 'outcome="error"')) >= 3, { timeoutMs: 15_000 });
    const text = await w.daemon.metrics.registry.metrics();
    const counted = text.split('\n').filter((l) => l.startsWith('letta_watcher_api_errors_total{'));
    expect(counted.map((l) => l.slice(0, l.lastIndexOf(' ')))).toEqual([`letta_watcher_api_errors_total{class="${c.apiClass}"}`]);
    expect(await metric(w.daemon, 'letta_watcher_api_errors_total', `class="${c.apiClass}"`)).toBeGreaterThanOrEqual(3);
  });

  it('memory stays bounded while a 50 MB body is served again and again', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const served: HugeResponse[] = [];
    const server = await api(plain(200, runJson('running')));
    const w = await watch(server);
    // Warm up on small answers (connections, JIT, metrics), then take the baseline.
    await waitFor(async () => (await metric(w.daemon, 'letta_watcher_polls_total', 'outcome="pending"')) >= 5, { timeoutMs: 10_000 });
    gc();
    const base = process.memoryUsage();
    let peak = { rss: base.rss, heapUsed: base.heapUsed, arrayBuffers: base.arrayBuffers, external: base.external };
    const sampler = setInterval(() => {
      const m = process.memoryUsage();
      peak = {
        rss: Math.max(peak.rss, m.rss),
        heapUsed: Math.max(peak.heapUsed, m.heapUsed),
        arrayBuffers: Math.max(peak.arrayBuffers, m.arrayBuffers),
        external: Math.max(peak.external, m.external),
      };
    }, 5);
    cleanup.add(() => clearInterval(sampler));

    // Alternate the two kinds of 50 MB answer: 40 in all, 2 GB that the daemon is offered.
    const ROUNDS = 40;
    server.set((req, res) => (served.length % 2 === 0 ? huge(false, served) : huge(true, served))(req, res));
    await waitFor(() => served.length >= ROUNDS, {
      timeoutMs: 40_000,
      intervalMs: 50,
      describe: () => `${served.length} of ${ROUNDS} 50 MB answers served`,
    });
    server.set(plain(200, runJson('running')));
    clearInterval(sampler);

    const growth = {
      rssMB: (peak.rss - base.rss) / MiB,
      heapUsedMB: (peak.heapUsed - base.heapUsed) / MiB,
      arrayBuffersMB: (peak.arrayBuffers - base.arrayBuffers) / MiB,
    };
    const sentMB = served.map((s) => Math.round(s.sent / MiB));
    console.log(`50 MB answers served: ${served.length}; MB sent before the client hung up: ${sentMB.join(' ')}; peak growth: ${JSON.stringify(growth)}`);
    // Stated bound: one poll holds at most maxResponseBytes (1 MiB) of body plus a chunk; with
    // the test's own allocations, heap + buffers grow by well under 32 MB and RSS by under
    // 96 MB. Reading one body whole would take 50 MB of buffers and 50 MB of string at once.
    expect(growth.arrayBuffersMB).toBeLessThan(32);
    expect(growth.heapUsedMB).toBeLessThan(32);
    expect(growth.rssMB).toBeLessThan(96);
    // The client hung up early every time; no answer was ever read to the end.
    expect(served.filter((s) => s.complete)).toEqual([]);
    expect(Math.max(...served.map((s) => s.sent))).toBeLessThan(16 * MiB);
    // Each of them was a failed poll for a body over the cap, and the run stayed watched.
    // (The last poll may still be settling when the last answer has gone out.)
    await waitFor(async () => (await metric(w.daemon, 'letta_watcher_polls_total', 'outcome="error"')) >= ROUNDS);
    expect(new Set(failedPollCodes(w.logs))).toEqual(new Set(['ERR_API_BODY_TOO_LARGE']));
    await expectStillWatched(w.prefix);

    await expectOneEventOnceFixed(server, w);
  }, 60_000);
});
