import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { DaemonError, isDaemonError } from '../../src/errors.ts';
import {
  DEFAULT_RUN_DEFAULTS,
  createSimRun,
  isValidRunId,
  runBodyAt,
  runPhaseAt,
} from './runs.ts';
import type { CallbackRecord, OutcomeWeights, RunDefaults, RunPhase, SimOutcome, SimRun, SimRunSpec, StopReason } from './runs.ts';
import { listPage, parseListQuery } from './list.ts';

export type { SimOutcome, SimRunSpec } from './runs.ts';

/**
 * A Letta-compatible server for the demo, integration tests, benchmarks and chaos tests.
 * Letta's routes are `GET /v1/runs/{run_id}` and `GET /v1/health/`; `/v1/_sim/*` is the simulator's own control surface
 * and is never faulted or authenticated, so a test can always steer it.
 */

export interface FaultOptions {
  /** Fraction 0..1 of run requests answered 500/502/503 with a Letta-like `{"detail": ...}`. */
  errorRate: number;
  /** Fraction answered 429 with `Retry-After: <retryAfterSeconds>`. */
  rateLimitRate: number;
  retryAfterSeconds: number;
  /** Fraction answered 409 "database is locked" with `Retry-After: 1` (Letta's SQLite quirk). */
  conflictRate: number;
  /** Delay added before every run answer. */
  latencyMs: number;
  /** Fraction never answered: the socket stays open until the client gives up or close(). */
  hangRate: number;
  /** Fraction answered 200 with a broken body (truncated JSON, HTML page, wrongly typed JSON). */
  malformedRate: number;
  /** Fraction of terminal runs reported with stop_reason and completed_at still null. */
  quirkRate: number;
  /** Fraction of Letta's callbacks never sent (the server died at the wrong moment, say). */
  callbackDropRate: number;
  /** How far behind retrieve the list is: it shows each run's status of this long ago. */
  listLagMs: number;
}

export interface SimulatorOptions {
  host?: string;
  port?: number;
  apiKey?: string;
  /** Runs to create at start. */
  initialRuns?: number;
  durationMs?: [number, number];
  outcomes?: OutcomeWeights;
  faults?: Partial<FaultOptions>;
  now?: () => number;
  random?: () => number;
  /** Called for every request to a runs route (retrieve and list), before it is answered. */
  onRequest?: (path: string) => void;
}

export interface SimStats {
  /** Requests to Letta's runs routes, list included (health checks are counted apart, in `healthChecks`). */
  requests: number;
  healthChecks: number;
  /** GET /v1/runs/ requests, and the bytes of all run answers (retrieve and list). */
  listRequests: number;
  responseBytes: number;
  /** Letta callbacks: sent, dropped on purpose, and failed (no 2xx, or no answer in 5 s). */
  callbacks: { sent: number; dropped: number; failed: number };
  /** Answers by HTTP status ("200", "429", ...); requests left hanging count under "hung". */
  byStatus: Record<string, number>;
  runsCreated: number;
  /** Distinct runs polled at least once. */
  pollsByRun: number;
}

export interface CreatedRun {
  id: string;
  agentId: string;
  finishesAt: number | null;
  outcome: SimOutcome;
  stopReason: StopReason | null;
}

export interface Simulator {
  readonly url: string;
  readonly port: number;
  createRun(spec?: SimRunSpec): CreatedRun;
  setFaults(f: Partial<FaultOptions>): void;
  setApiKey(key: string | undefined): void;
  pollsOf(runId: string): number;
  stats(): SimStats;
  close(): Promise<void>;
}

export const DEFAULT_SIMULATOR_PORT = 8283;

export const DEFAULT_FAULTS: Readonly<FaultOptions> = {
  errorRate: 0,
  rateLimitRate: 0,
  retryAfterSeconds: 1,
  conflictRate: 0,
  latencyMs: 0,
  hangRate: 0,
  malformedRate: 0,
  quirkRate: 0,
  callbackDropRate: 0,
  listLagMs: 0,
};

const RATE_KEYS = ['errorRate', 'rateLimitRate', 'conflictRate', 'hangRate', 'malformedRate', 'quirkRate', 'callbackDropRate'] as const;
const FAULT_KEYS: readonly string[] = Object.keys(DEFAULT_FAULTS);
const RUNS_PREFIX = '/v1/runs/';
const SIM_PREFIX = '/v1/_sim/';
const MAX_CONTROL_BODY_BYTES = 1024 * 1024;
const MAX_CREATE_COUNT = 100_000;

const JSON_HEADERS = { 'content-type': 'application/json' } as const;
const NOT_FOUND_BODY = '{"detail":"Not Found"}';
/** Letta's answers, word for word: a bad ID format (400) and an unknown run (404). */
const invalidIdBody = (id: string) => JSON.stringify({ detail: `Invalid run ID format: ${id}. Expected format: 'run-<uuid4>'` });
const runNotFoundBody = (id: string) => JSON.stringify({ detail: `Run not found with id=${id}` });
/** Letta's health answer (schema Health: version and status). */
const HEALTH_BODY = JSON.stringify({ version: '0.16.0-sim', status: 'ok' });
const UNAUTHORIZED_BODY = '{"detail":"Unauthorized: missing or invalid API key"}';
const RATE_LIMIT_BODY = '{"detail":"Rate limit exceeded"}';
const CONFLICT_BODY = '{"detail":"database is locked"}';
const SERVER_ERRORS: readonly (readonly [number, string])[] = [
  [500, '{"detail":"An unexpected error occurred: Internal Server Error"}'],
  [502, '{"detail":"Bad Gateway"}'],
  [503, '{"detail":"Service Unavailable"}'],
];
const HTML_ERROR_PAGE =
  '<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>' +
  '<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n';

/**
 * Validates a partial fault set against `base` and returns the merged result. `label` prefixes
 * the option name in errors so CLI, options and HTTP callers each see the name they used.
 */
export function mergeFaults(base: Readonly<FaultOptions>, partial: unknown, label = 'faults'): FaultOptions {
  if (partial === undefined) return { ...base };
  if (partial === null || typeof partial !== 'object' || Array.isArray(partial)) {
    throw new DaemonError('ERR_USAGE', `${label} must be an object`);
  }
  const out: FaultOptions = { ...base };
  for (const [key, value] of Object.entries(partial)) {
    if (value === undefined) continue;
    if (!FAULT_KEYS.includes(key)) {
      throw new DaemonError('ERR_USAGE', `${label}.${key} is not a fault option (known: ${FAULT_KEYS.join(', ')})`);
    }
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
      throw new DaemonError('ERR_USAGE', `${label}.${key} must be a non-negative number (got ${JSON.stringify(value)})`);
    }
    if ((RATE_KEYS as readonly string[]).includes(key) && value > 1) {
      throw new DaemonError('ERR_USAGE', `${label}.${key} must be between 0 and 1 (got ${value})`);
    }
    // Retry-After is delta-seconds in HTTP: a non-negative integer.
    if (key === 'retryAfterSeconds' && !Number.isInteger(value)) {
      throw new DaemonError('ERR_USAGE', `${label}.${key} must be a whole number of seconds (got ${value})`);
    }
    out[key as keyof FaultOptions] = value;
  }
  return out;
}

function validateOptions(options: SimulatorOptions): { host: string; port: number; defaults: RunDefaults; initialRuns: number } {
  const host = options.host ?? '127.0.0.1';
  if (typeof host !== 'string' || host.length === 0) {
    throw new DaemonError('ERR_USAGE', `host must be a non-empty string (got ${JSON.stringify(host)})`);
  }
  const port = options.port ?? DEFAULT_SIMULATOR_PORT;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new DaemonError('ERR_USAGE', `port must be an integer 0-65535 (got ${String(port)})`);
  }
  const initialRuns = options.initialRuns ?? 0;
  if (!Number.isInteger(initialRuns) || initialRuns < 0) {
    throw new DaemonError('ERR_USAGE', `initialRuns must be a non-negative integer (got ${String(initialRuns)})`);
  }
  const durationMs = options.durationMs ?? DEFAULT_RUN_DEFAULTS.durationMs;
  const [minMs, maxMs] = durationMs;
  if (
    !Array.isArray(durationMs) ||
    durationMs.length !== 2 ||
    typeof minMs !== 'number' ||
    typeof maxMs !== 'number' ||
    !Number.isFinite(minMs) ||
    !Number.isFinite(maxMs) ||
    minMs < 0 ||
    maxMs < minMs
  ) {
    throw new DaemonError('ERR_USAGE', `durationMs must be [min, max] with 0 <= min <= max (got ${JSON.stringify(durationMs)})`);
  }
  const outcomes = options.outcomes ?? DEFAULT_RUN_DEFAULTS.outcomes;
  for (const key of ['completed', 'failed', 'cancelled'] as const) {
    const w = outcomes[key];
    if (typeof w !== 'number' || !Number.isFinite(w) || w < 0) {
      throw new DaemonError('ERR_USAGE', `outcomes.${key} must be a non-negative number (got ${String(w)})`);
    }
  }
  if (outcomes.completed + outcomes.failed + outcomes.cancelled <= 0) {
    throw new DaemonError('ERR_USAGE', 'outcomes must have at least one positive weight');
  }
  if (options.apiKey !== undefined && (typeof options.apiKey !== 'string' || options.apiKey.length === 0)) {
    throw new DaemonError('ERR_USAGE', 'apiKey must be a non-empty string when set');
  }
  return { host, port, initialRuns, defaults: { durationMs: [minMs, maxMs], outcomes: { ...outcomes } } };
}

interface RunEntry {
  run: SimRun;
  polls: number;
  /** Letta's record of its callback attempt, once made. */
  callback?: CallbackRecord | undefined;
  /** Last serialised body and the phase it belongs to: the body only changes between phases. */
  cachedKey: RunPhase | 'quirk' | null;
  cachedBody: string;
}

/** Turns the HTTP create body (snake_case) into specs, or throws ERR_USAGE naming the field. */
function parseCreateBody(body: unknown): SimRunSpec[] {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new DaemonError('ERR_USAGE', 'body must be a JSON object');
  }
  const known = ['count', 'id', 'duration_ms', 'outcome', 'metadata', 'agent_id', 'callback_url'];
  for (const key of Object.keys(body)) {
    if (!known.includes(key)) throw new DaemonError('ERR_USAGE', `${key}: unknown field (known: ${known.join(', ')})`);
  }
  const b = body as Record<string, unknown>;
  const count = b['count'] ?? 1;
  if (typeof count !== 'number' || !Number.isInteger(count) || count < 1 || count > MAX_CREATE_COUNT) {
    throw new DaemonError('ERR_USAGE', `count: must be an integer 1-${MAX_CREATE_COUNT} (got ${JSON.stringify(count)})`);
  }
  const spec: SimRunSpec = {};
  const id = b['id'];
  if (id !== undefined) {
    if (typeof id !== 'string' || !isValidRunId(id)) {
      throw new DaemonError('ERR_USAGE', `id: must be run-<lowercase uuid4>, as Letta makes them (got ${JSON.stringify(id)})`);
    }
    if (count !== 1) throw new DaemonError('ERR_USAGE', 'count: must be 1 when id is given');
    spec.id = id;
  }
  const duration = b['duration_ms'];
  if (duration !== undefined) {
    if (typeof duration !== 'number' || !Number.isFinite(duration) || duration < 0) {
      throw new DaemonError('ERR_USAGE', `duration_ms: must be a non-negative number (got ${JSON.stringify(duration)})`);
    }
    spec.durationMs = duration;
  }
  const outcome = b['outcome'];
  if (outcome !== undefined) {
    if (outcome !== 'completed' && outcome !== 'failed' && outcome !== 'cancelled' && outcome !== 'never') {
      throw new DaemonError(
        'ERR_USAGE',
        `outcome: must be one of completed, failed, cancelled, never (got ${JSON.stringify(outcome)})`,
      );
    }
    spec.outcome = outcome;
  }
  const metadata = b['metadata'];
  if (metadata !== undefined) {
    if (metadata !== null && (typeof metadata !== 'object' || Array.isArray(metadata))) {
      throw new DaemonError('ERR_USAGE', 'metadata: must be an object or null');
    }
    spec.metadata = metadata as Record<string, unknown> | null;
  }
  const callbackUrl = b['callback_url'];
  if (callbackUrl !== undefined) {
    if (typeof callbackUrl !== 'string' || !/^https?:\/\//.test(callbackUrl)) {
      throw new DaemonError('ERR_USAGE', `callback_url: must be an http(s) URL (got ${JSON.stringify(callbackUrl)})`);
    }
    spec.callbackUrl = callbackUrl;
  }
  const agentId = b['agent_id'];
  if (agentId !== undefined) {
    if (typeof agentId !== 'string' || agentId.length === 0) {
      throw new DaemonError('ERR_USAGE', `agent_id: must be a non-empty string (got ${JSON.stringify(agentId)})`);
    }
    spec.agentId = agentId;
  }
  return Array.from({ length: count }, () => ({ ...spec }));
}

export async function startSimulator(options: SimulatorOptions = {}): Promise<Simulator> {
  const { host, port: requestedPort, initialRuns, defaults } = validateOptions(options);
  const now = options.now ?? Date.now;
  const random = options.random ?? Math.random;
  let faults = mergeFaults(DEFAULT_FAULTS, options.faults);
  let expectedAuth = options.apiKey === undefined ? undefined : `Bearer ${options.apiKey}`;

  const runs = new Map<string, RunEntry>();
  const byStatus: Record<string, number> = {};
  let requests = 0;
  let healthChecks = 0;
  let listRequests = 0;
  let responseBytes = 0;
  const callbackStats = { sent: 0, dropped: 0, failed: 0 };
  let runsCreated = 0;
  let distinctPolled = 0;
  // Latency timers still pending; close() clears them so it does not wait out the delay.
  const timers = new Set<NodeJS.Timeout>();
  let closing: Promise<void> | undefined;

  function count(key: string): void {
    byStatus[key] = (byStatus[key] ?? 0) + 1;
  }

  function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = JSON_HEADERS): void {
    count(String(status));
    responseBytes += Buffer.byteLength(body);
    if (res.destroyed) return;
    res.writeHead(status, { ...headers, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }

  function createRun(spec: SimRunSpec = {}): CreatedRun {
    if (spec.id !== undefined && runs.has(spec.id)) {
      throw new DaemonError('ERR_USAGE', `run id already exists: ${spec.id}`);
    }
    const run = createSimRun(spec, { now: now(), random, defaults });
    const entry: RunEntry = { run, polls: 0, cachedKey: null, cachedBody: '' };
    runs.set(run.id, entry);
    runsCreated++;
    if (run.callbackUrl !== null && run.finishesAt !== null) scheduleCallback(entry);
    return { id: run.id, agentId: run.agentId, finishesAt: run.finishesAt, outcome: run.outcome, stopReason: run.stopReason };
  }

  /**
   * Letta's callback: one POST of {run_id, status, completed_at, metadata} when the run ends,
   * a 5 s timeout, no retry, no signature; the outcome is recorded on the run.
   */
  function scheduleCallback(entry: RunEntry): void {
    const { run } = entry;
    const timer = setTimeout(() => {
      timers.delete(timer);
      if (closing || run.callbackUrl === null) return;
      if (random() < faults.callbackDropRate) {
        callbackStats.dropped++;
        return;
      }
      const body = runBodyAt(run, now());
      const sentAt = now();
      fetch(run.callbackUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ run_id: run.id, status: body.status, completed_at: body.completed_at, metadata: run.metadata }),
        signal: AbortSignal.timeout(5000),
      }).then(
        async (r) => {
          await r.body?.cancel();
          if (r.status < 200 || r.status >= 300) callbackStats.failed++;
          else callbackStats.sent++;
          entry.callback = { sentAt, statusCode: r.status, error: null };
          entry.cachedKey = null;
        },
        (err: unknown) => {
          callbackStats.failed++;
          entry.callback = { sentAt, statusCode: null, error: (err as Error).message };
          entry.cachedKey = null;
        },
      );
    }, Math.max(0, (run.finishesAt ?? 0) - now()));
    timers.add(timer);
  }

  function runBodyJson(entry: RunEntry): string {
    const t = now();
    const phase = runPhaseAt(entry.run, t);
    const quirk = phase === 'terminal' && entry.run.quirkRoll < faults.quirkRate;
    const key = quirk ? 'quirk' : phase;
    if (entry.cachedKey !== key) {
      entry.cachedBody = JSON.stringify(runBodyAt(entry.run, t, quirk, entry.callback));
      entry.cachedKey = key;
    }
    return entry.cachedBody;
  }

  function malformedBody(res: ServerResponse, id: string, entry: RunEntry | undefined): void {
    const pick = random();
    if (pick < 1 / 3) {
      const full = entry
        ? runBodyJson(entry)
        : JSON.stringify({ id, status: 'running', agent_id: `agent-${id}`, created_at: new Date(now()).toISOString() });
      // Cut inside the object so the body can never parse.
      send(res, 200, full.slice(0, Math.max(1, Math.floor(full.length / 2))));
    } else if (pick < 2 / 3) {
      send(res, 200, HTML_ERROR_PAGE, { 'content-type': 'text/html; charset=utf-8' });
    } else {
      // Parses as JSON, but every field a client relies on has the wrong type.
      send(
        res,
        200,
        JSON.stringify({
          id: 12345,
          agent_id: null,
          status: 7,
          created_at: false,
          completed_at: 1760737985,
          stop_reason: ['end_turn'],
          metadata: 'none',
        }),
      );
    }
  }

  /** The faults every Letta runs route can meet; true when one answered (or hung) the request. */
  function faulted(res: ServerResponse): boolean {
    if (faults.hangRate > 0 && random() < faults.hangRate) {
      // No answer at all; close() or the client's own timeout ends the socket.
      count('hung');
      return true;
    }
    if (faults.rateLimitRate > 0 && random() < faults.rateLimitRate) {
      send(res, 429, RATE_LIMIT_BODY, { ...JSON_HEADERS, 'retry-after': String(faults.retryAfterSeconds) });
      return true;
    }
    if (faults.conflictRate > 0 && random() < faults.conflictRate) {
      send(res, 409, CONFLICT_BODY, { ...JSON_HEADERS, 'retry-after': '1' });
      return true;
    }
    if (faults.errorRate > 0 && random() < faults.errorRate) {
      const [status, body] = SERVER_ERRORS[Math.floor(random() * SERVER_ERRORS.length)] ?? SERVER_ERRORS[0]!;
      send(res, status, body);
      return true;
    }
    return false;
  }

  function answerList(req: IncomingMessage, res: ServerResponse, search: URLSearchParams): void {
    if (faulted(res)) return;
    if (expectedAuth !== undefined && req.headers.authorization !== expectedAuth) return send(res, 401, UNAUTHORIZED_BODY);
    const q = parseListQuery(search);
    if ('error' in q) return send(res, 422, q.error);
    send(res, 200, JSON.stringify(listPage(runs.values(), q, now(), faults.listLagMs)));
  }

  function answerRun(req: IncomingMessage, res: ServerResponse, rawId: string, id: string | null, entry: RunEntry | undefined): void {
    if (faulted(res)) return;
    if (faults.malformedRate > 0 && random() < faults.malformedRate) {
      return malformedBody(res, id ?? '', entry);
    }
    if (expectedAuth !== undefined && req.headers.authorization !== expectedAuth) {
      return send(res, 401, UNAUTHORIZED_BODY);
    }
    if (id === null || !isValidRunId(id)) return send(res, 400, invalidIdBody(id ?? rawId));
    if (entry === undefined) return send(res, 404, runNotFoundBody(id));
    send(res, 200, runBodyJson(entry));
  }

  function handleRunGet(req: IncomingMessage, res: ServerResponse, rawId: string): void {
    let id: string | null = rawId;
    if (rawId.includes('%')) {
      try {
        id = decodeURIComponent(rawId);
      } catch {
        id = null; // undecodable: answered as an invalid id once faults have had their turn
      }
    }
    const entry = id === null ? undefined : runs.get(id);
    if (entry !== undefined && entry.polls++ === 0) distinctPolled++;
    if (faults.latencyMs > 0) {
      const timer = setTimeout(() => {
        timers.delete(timer);
        answerRun(req, res, rawId, id, entry);
      }, faults.latencyMs);
      timers.add(timer);
      return;
    }
    answerRun(req, res, rawId, id, entry);
  }

  function readJson(req: IncomingMessage): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_CONTROL_BODY_BYTES) {
          reject(new DaemonError('ERR_USAGE', `body: larger than ${MAX_CONTROL_BODY_BYTES} bytes`));
          req.destroy();
          return;
        }
        chunks.push(chunk);
      });
      req.on('error', reject);
      req.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8').trim();
        if (text === '') return resolve({});
        try {
          resolve(JSON.parse(text));
        } catch {
          reject(new DaemonError('ERR_USAGE', 'body: not valid JSON'));
        }
      });
    });
  }

  async function handleControl(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const route = `${req.method ?? ''} ${path.slice(SIM_PREFIX.length)}`;
    try {
      switch (route) {
        case 'GET stats':
          return send(res, 200, JSON.stringify(stats()));
        case 'POST runs': {
          const specs = parseCreateBody(await readJson(req));
          const first = specs[0];
          if (first?.id !== undefined && runs.has(first.id)) {
            return send(res, 409, JSON.stringify({ detail: `id: run already exists: ${first.id}` }));
          }
          const created = specs.map((spec) => {
            const r = createRun(spec);
            return { id: r.id, agent_id: r.agentId, outcome: r.outcome, finishes_at: r.finishesAt };
          });
          return send(res, 201, JSON.stringify({ runs: created }));
        }
        case 'POST faults':
          faults = mergeFaults(faults, await readJson(req), 'faults');
          return send(res, 200, JSON.stringify(faults));
        default:
          return send(res, 404, NOT_FOUND_BODY);
      }
    } catch (err) {
      if (isDaemonError(err, 'ERR_USAGE')) return send(res, 400, JSON.stringify({ detail: err.message }));
      return send(res, 500, JSON.stringify({ detail: 'simulator error' }));
    }
  }

  function stats(): SimStats {
    return { requests, healthChecks, listRequests, responseBytes, callbacks: { ...callbackStats }, byStatus: { ...byStatus }, runsCreated, pollsByRun: distinctPolled };
  }

  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    if (path === '/v1/health/' && req.method === 'GET') {
      // Not in `requests` or `byStatus`: those count what tests and benchmarks measure, polls.
      healthChecks++;
      res.writeHead(200, { ...JSON_HEADERS, 'content-length': Buffer.byteLength(HEALTH_BODY) });
      res.end(HEALTH_BODY);
      return;
    }
    requests++;
    options.onRequest?.(url);
    if (path === RUNS_PREFIX && req.method === 'GET') {
      listRequests++;
      const search = new URLSearchParams(q === -1 ? '' : url.slice(q + 1));
      if (faults.latencyMs > 0) {
        const timer = setTimeout(() => {
          timers.delete(timer);
          answerList(req, res, search);
        }, faults.latencyMs);
        timers.add(timer);
        return;
      }
      return answerList(req, res, search);
    }
    if (path === '/v1/runs' && req.method === 'GET') {
      // FastAPI redirects a path without its trailing slash.
      return send(res, 307, '', { location: `/v1/runs/${q === -1 ? '' : url.slice(q)}` });
    }
    if (path.startsWith(RUNS_PREFIX)) {
      const rawId = path.slice(RUNS_PREFIX.length);
      if (req.method === 'GET' && rawId.length > 0 && !rawId.includes('/')) return handleRunGet(req, res, rawId);
    } else if (path.startsWith(SIM_PREFIX)) {
      void handleControl(req, res, path);
      return;
    } else if (path === '/v1/health' && req.method === 'GET') {
      // FastAPI redirects a path without its trailing slash.
      return send(res, 307, '', { location: '/v1/health/' });
    }
    send(res, 404, NOT_FOUND_BODY);
  });
  // Clients reuse connections under load; a few seconds outlasts any sane poll interval gap
  // in the benchmark without leaving idle sockets around for long after a test.
  server.keepAliveTimeout = 5000;

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => {
      reject(new DaemonError('ERR_USAGE', `cannot listen on ${host}:${requestedPort}: ${err.message}`, { cause: err }));
    };
    server.once('error', onError);
    server.listen(requestedPort, host, () => {
      server.off('error', onError);
      resolve();
    });
  });

  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : requestedPort;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  for (let i = 0; i < initialRuns; i++) createRun();

  return {
    url,
    port,
    createRun,
    setFaults(f) {
      faults = mergeFaults(faults, f);
    },
    setApiKey(key) {
      if (key !== undefined && (typeof key !== 'string' || key.length === 0)) {
        throw new DaemonError('ERR_USAGE', 'apiKey must be a non-empty string when set');
      }
      expectedAuth = key === undefined ? undefined : `Bearer ${key}`;
    },
    pollsOf(runId) {
      return runs.get(runId)?.polls ?? 0;
    },
    stats,
    close() {
      closing ??= new Promise<void>((resolve) => {
        for (const timer of timers) clearTimeout(timer);
        timers.clear();
        server.close(() => resolve());
        // Hung and keep-alive sockets would hold close() open until the clients give up.
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
