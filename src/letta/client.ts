import pRetry from 'p-retry';
import type { IncomingHttpHeaders } from 'node:http';
import { Agent, type Dispatcher } from 'undici';
import { z } from 'zod';
import { classifyStatus, isTransientNetworkError } from './http-status.ts';
import { parseLettaTime } from './run-state.ts';
import { parseRetryAfter } from '../retry-after.ts';
import type { Clock } from '../clock.ts';
import { DaemonError, isDaemonError } from '../errors.ts';
import { RUN_ID_PATTERN } from './run-id.ts';

/**
 * The Run as Letta returns it. Nearly every field is nullable in the spec and the API has
 * drifted before, so: unknown fields are kept, status and stop_reason are any string (the
 * classifier decides what they mean), and only `agent_id` is required.
 */
export const runSchema = z.looseObject({
  id: z.string().nullish(),
  agent_id: z.string(),
  status: z.string().nullish(),
  stop_reason: z.string().nullish(),
  created_at: z.string().nullish(),
  completed_at: z.string().nullish(),
  conversation_id: z.string().nullish(),
  base_template_id: z.string().nullish(),
  background: z.boolean().nullish(),
  metadata: z.record(z.string(), z.unknown()).nullish(),
  request_config: z.looseObject({}).nullish(),
  callback_url: z.string().nullish(),
  callback_sent_at: z.string().nullish(),
  callback_status_code: z.number().int().nullish(),
  callback_error: z.string().nullish(),
  ttft_ns: z.number().nullish(),
  total_duration_ns: z.number().nullish(),
});
export type Run = z.output<typeof runSchema>;

export type RunLookup =
  | { kind: 'found'; run: Run }
  | { kind: 'not_found' }
  | { kind: 'bad_id'; status: number }
  | { kind: 'auth'; status: number }
  /** A 404 that is not Letta's "no such run": the base URL does not reach a Letta API. */
  | { kind: 'not_letta'; status: number; detail: string };

/** A page of active runs, or a server that does not list runs (404, 405, 422). */
export type ActivePage =
  | { kind: 'page'; runs: { id: string; createdAt: number | undefined }[]; bytes: number }
  | { kind: 'unsupported'; status: number; detail: string };

/** Only what reconciliation reads of each listed run; the rest is not even looked at. */
const listedRunSchema = z.array(z.looseObject({ id: z.string(), created_at: z.string().nullish() }));

/** What GET /v1/health/ says of the base URL. */
export type HealthVerdict =
  | { kind: 'letta' }
  | { kind: 'auth'; status: number }
  | { kind: 'not_letta'; detail: string }
  /** No answer, or a transient one (5xx, 429): nothing to conclude yet. */
  | { kind: 'unreachable'; detail: string };

/**
 * Letta's 404 for an unknown run names the run (`{"detail":"Run not found with id=..."}`). A
 * route miss is FastAPI's `{"detail":"Not Found"}`, and something that is not Letta at all (the
 * Letta App Server, a proxy, a missing path prefix) answers an empty or non-JSON 404: those
 * mean LETTA_BASE_URL is wrong, never that the run does not exist.
 */
export function isRunNotFound(body: string): boolean {
  try {
    const detail = (JSON.parse(body) as { detail?: unknown } | null)?.detail;
    return typeof detail === 'string' && !/^\s*not found\s*$/i.test(detail) && /\brun\b/i.test(detail);
  } catch {
    return false;
  }
}

/** A body shaped like Letta's Health (version and status), to tell Letta from anything else. */
function isLettaHealth(body: string): boolean {
  try {
    const h = JSON.parse(body) as { version?: unknown; status?: unknown } | null;
    return typeof h === 'object' && h !== null && (typeof h.version === 'string' || typeof h.status === 'string');
  } catch {
    return false;
  }
}

export interface LettaClient {
  /**
   * One poll. Transient faults are retried here (and only here); what is still failing after
   * that is thrown as a DaemonError (ERR_API_STATUS / _NETWORK / _TIMEOUT / _BODY_TOO_LARGE /
   * _SCHEMA) for the caller to reschedule.
   */
  getRun(runId: string, signal: AbortSignal): Promise<RunLookup>;
  /** GET /v1/health/: does the base URL answer like a Letta API? One attempt, no retries. */
  checkHealth(signal: AbortSignal): Promise<HealthVerdict>;
  /**
   * One page of the organisation's active runs, newest first (GET /v1/runs/?active=true). One
   * attempt: the reconciler simply tries again at its next turn. Throws a DaemonError on a
   * transient failure or a body that is not a list of runs.
   */
  listActive(limit: number, signal: AbortSignal): Promise<ActivePage>;
  close(): Promise<void>;
}

export interface LettaClientOptions {
  baseUrl: string;
  apiKey?: string | undefined;
  requestTimeoutMs: number;
  maxResponseBytes: number;
  /** Cap on a list page's body (a full page of 1,000 runs is about 1 MB). */
  maxListBytes?: number;
  retries: number;
  retryMinMs: number;
  retryMaxMs: number;
  /** A Retry-After longer than this ends the in-poll retries; the run is rescheduled instead. */
  retryAfterCapMs: number;
  clock: Clock;
  /** Tests pass an undici MockAgent; by default a keep-alive pool of `connections` (the daemon sizes it to the concurrency). */
  dispatcher?: Dispatcher;
  connections?: number;
  /** Called for every failed attempt, retried or not (metrics). */
  onAttemptError?: (err: DaemonError) => void;
  /** Waited on before every request (the fleet's API budget). */
  beforeRequest?: (signal: AbortSignal) => Promise<void>;
  /** Letta answered 429 (with its Retry-After in ms, if any). */
  onRateLimited?: (retryAfterMs: number | undefined) => void;
}

interface RawAnswer {
  status: number;
  body: string;
}

export function makeLettaClient(options: LettaClientOptions): LettaClient {
  const ownDispatcher = options.dispatcher === undefined;
  const dispatcher =
    options.dispatcher ?? new Agent({ keepAliveTimeout: 30_000, connections: options.connections ?? null, pipelining: 1 });
  const base = new URL(options.baseUrl);
  const origin = base.origin;
  const basePath = base.pathname.replace(/\/+$/, '');
  // identity: undici's request() does not decompress, so a compressed body could not be read,
  // and a body claiming an encoding we did not ask for is refused rather than trusted.
  const headers: Record<string, string> = {
    accept: 'application/json',
    'accept-encoding': 'identity',
    'user-agent': 'letta-run-watcher',
  };
  if (options.apiKey) headers['authorization'] = `Bearer ${options.apiKey}`;

  /** One request on undici's handler API (see RunRequest), after the budget lets it go. */
  function attempt(path: string, signal: AbortSignal, limits: LettaClientOptions = options): Promise<RawAnswer> {
    if (!options.beforeRequest && !options.onRateLimited) return send(path, signal, limits);
    return (async () => {
      await options.beforeRequest?.(signal);
      try {
        return await send(path, signal, limits);
      } catch (err) {
        if (isDaemonError(err) && err.status === 429) options.onRateLimited?.(err.retryAfterMs);
        throw err;
      }
    })();
  }

  function send(path: string, signal: AbortSignal, limits: LettaClientOptions): Promise<RawAnswer> {
    return new Promise<RawAnswer>((resolve, reject) => {
      const request = new RunRequest(limits, signal, resolve, reject);
      if (signal.aborted) return request.finish(signal.reason);
      signal.addEventListener('abort', request, { once: true });
      try {
        dispatcher.dispatch({ origin, path, method: 'GET', headers }, request);
      } catch (err) {
        request.finish(new DaemonError('ERR_API_NETWORK', `request to Letta API failed: ${(err as Error).message}`, { cause: err }));
      }
    });
  }

  function retryable(err: unknown): boolean {
    if (!isDaemonError(err)) return false;
    if (err.code === 'ERR_API_TIMEOUT') return true;
    if (err.code === 'ERR_API_NETWORK') return isTransientNetworkError(err.cause);
    if (err.code === 'ERR_API_STATUS') return (err.retryAfterMs ?? 0) <= options.retryAfterCapMs;
    return false;
  }

  return {
    async getRun(runId, signal) {
      // Intake enforces this already; checked again so no ID ("..", "a/b") can leave /v1/runs/.
      if (!RUN_ID_PATTERN.test(runId)) return { kind: 'bad_id', status: 400 };
      const path = `${basePath}/v1/runs/${encodeURIComponent(runId)}`;
      // p-retry wraps only the transport; parsing happens after it, since a ZodError would
      // otherwise look like a retryable failure.
      const answer = await pRetry(() => attempt(path, signal), {
        retries: options.retries,
        minTimeout: options.retryMinMs,
        maxTimeout: options.retryMaxMs,
        factor: 2,
        randomize: true,
        signal,
        shouldRetry: ({ error }) => retryable(error),
        onFailedAttempt: async ({ error, retryDelay, retriesLeft }) => {
          if (isDaemonError(error)) options.onAttemptError?.(error);
          // Honour Retry-After: wait out whatever p-retry's own delay does not cover.
          const wanted = isDaemonError(error) ? (error.retryAfterMs ?? 0) : 0;
          if (retriesLeft > 0 && retryable(error) && wanted > retryDelay) {
            await options.clock.sleep(wanted - retryDelay, signal);
          }
        },
      });
      switch (classifyStatus(answer.status)) {
        case 'ok':
          try {
            return { kind: 'found', run: parseRun(answer.body, answer.status) };
          } catch (err) {
            if (isDaemonError(err)) options.onAttemptError?.(err);
            throw err;
          }
        case 'not_found':
          return isRunNotFound(answer.body) ? { kind: 'not_found' } : { kind: 'not_letta', status: answer.status, detail: snippet(answer.body) || '(empty body)' };
        case 'bad_id':
          return { kind: 'bad_id', status: answer.status };
        case 'auth':
          return { kind: 'auth', status: answer.status };
        default: {
          const err = new DaemonError('ERR_API_STATUS', `Letta API answered ${answer.status}: ${snippet(answer.body)}`, {
            status: answer.status,
          });
          options.onAttemptError?.(err);
          throw err;
        }
      }
    },
    async listActive(limit, signal) {
      const answer = await attempt(`${basePath}/v1/runs/?active=true&limit=${limit}`, signal, { ...options, maxResponseBytes: options.maxListBytes ?? 8 * options.maxResponseBytes });
      if (answer.status === 404 || answer.status === 405 || answer.status === 422) {
        return { kind: 'unsupported', status: answer.status, detail: snippet(answer.body) };
      }
      if (classifyStatus(answer.status) !== 'ok') {
        throw new DaemonError('ERR_API_STATUS', `Letta API answered ${answer.status} to the list of active runs: ${snippet(answer.body)}`, { status: answer.status });
      }
      let json: unknown;
      try {
        json = JSON.parse(answer.body);
      } catch (err) {
        throw new DaemonError('ERR_API_SCHEMA', `the list of active runs is not JSON: ${snippet(answer.body)}`, { cause: err });
      }
      const parsed = listedRunSchema.safeParse(json);
      if (!parsed.success) throw new DaemonError('ERR_API_SCHEMA', `the list of active runs is not a list of runs: ${z.prettifyError(parsed.error)}`, { cause: parsed.error });
      return { kind: 'page', runs: parsed.data.map((r) => ({ id: r.id, createdAt: parseLettaTime(r.created_at) })), bytes: Buffer.byteLength(answer.body) };
    },
    async checkHealth(signal) {
      let answer: RawAnswer;
      try {
        answer = await attempt(`${basePath}/v1/health/`, signal);
      } catch (err) {
        return { kind: 'unreachable', detail: (err as Error).message };
      }
      const cls = classifyStatus(answer.status);
      if (cls === 'ok') return isLettaHealth(answer.body) ? { kind: 'letta' } : { kind: 'not_letta', detail: `GET /v1/health/ answered ${answer.status} with ${snippet(answer.body) || 'an empty body'}` };
      if (cls === 'auth') return { kind: 'auth', status: answer.status };
      return { kind: 'not_letta', detail: `GET /v1/health/ answered ${answer.status}${answer.body ? `: ${snippet(answer.body)}` : ' with an empty body'}` };
    },
    async close() {
      if (ownDispatcher) await dispatcher.close();
    },
  };
}

/**
 * One GET on undici's handler API (dispatch): the hot path, so no body stream, async iterator
 * or extra promise per request, and one object for the handler, the abort listener and the
 * timer's callback. One timer bounds the whole exchange; the caller's signal aborts it; the
 * body is capped as it arrives.
 */
class RunRequest implements Dispatcher.DispatchHandler, EventListenerObject {
  #controller: Dispatcher.DispatchController | undefined;
  #done = false;
  #status = 0;
  #transient = false;
  #retryAfterMs: number | undefined;
  #size = 0;
  #chunks: Buffer[] = [];
  readonly #timer: NodeJS.Timeout;
  readonly #options: LettaClientOptions;
  readonly #signal: AbortSignal;
  readonly #resolve: (answer: RawAnswer) => void;
  readonly #reject: (err: unknown) => void;

  constructor(options: LettaClientOptions, signal: AbortSignal, resolve: (answer: RawAnswer) => void, reject: (err: unknown) => void) {
    this.#options = options;
    this.#signal = signal;
    this.#resolve = resolve;
    this.#reject = reject;
    this.#timer = setTimeout(RunRequest.#onTimeout, options.requestTimeoutMs, this);
  }

  static #onTimeout(this: void, r: RunRequest): void {
    r.#stop(new DaemonError('ERR_API_TIMEOUT', `Letta API did not answer within ${r.#options.requestTimeoutMs} ms`));
  }

  /** The caller's signal aborted. */
  handleEvent(): void {
    this.#stop(this.#signal.reason);
  }

  finish(err: unknown, answer?: RawAnswer): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#timer);
    // Once the signal fired its once-listener is gone; removing it anyway walks every other
    // request's listener on that shared signal (quadratic at 10,000 in flight).
    if (!this.#signal.aborted) this.#signal.removeEventListener('abort', this);
    if (err === undefined && answer) this.#resolve(answer);
    else this.#reject(err);
  }

  #stop(err: unknown): void {
    // Settle first: aborting calls onResponseError, which must not replace this error.
    this.finish(err);
    const c = this.#controller;
    if (c && !c.aborted) c.abort(err instanceof Error ? err : new Error(String(err)));
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
  }

  onResponseStart(_c: Dispatcher.DispatchController, statusCode: number, h: IncomingHttpHeaders): void {
    this.#status = statusCode;
    if (classifyStatus(statusCode) === 'transient') {
      this.#transient = true;
      this.#retryAfterMs = parseRetryAfter(h['retry-after'], this.#options.clock.now());
      return;
    }
    const encoding = String(h['content-encoding'] ?? 'identity').trim().toLowerCase();
    if (encoding !== 'identity' && encoding !== '') {
      return this.#stop(new DaemonError('ERR_API_SCHEMA', `Letta API answered with content-encoding ${encoding}, which was not asked for`, { status: statusCode }));
    }
    const declared = Number(h['content-length']);
    if (Number.isFinite(declared) && declared > this.#options.maxResponseBytes) {
      this.#stop(new DaemonError('ERR_API_BODY_TOO_LARGE', `Letta API answer of ${declared} bytes exceeds the ${this.#options.maxResponseBytes}-byte cap`, { status: statusCode }));
    }
  }

  onResponseData(_c: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#done || this.#transient) return;
    this.#size += chunk.length;
    if (this.#size > this.#options.maxResponseBytes) {
      return this.#stop(new DaemonError('ERR_API_BODY_TOO_LARGE', `Letta API answer exceeds the ${this.#options.maxResponseBytes}-byte cap`, { status: this.#status }));
    }
    this.#chunks.push(chunk);
  }

  onResponseEnd(): void {
    const status = this.#status;
    if (this.#transient) {
      const retryAfterMs = this.#retryAfterMs;
      return this.finish(new DaemonError('ERR_API_STATUS', `Letta API answered ${status}`, { status, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) }));
    }
    const chunks = this.#chunks;
    const body = chunks.length === 1 ? (chunks[0] as Buffer).toString('utf8') : Buffer.concat(chunks, this.#size).toString('utf8');
    this.finish(undefined, { status, body });
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    if (this.#done) return;
    const what = isTransientNetworkError(err) ? 'cannot reach Letta API' : 'request to Letta API failed';
    this.finish(new DaemonError('ERR_API_NETWORK', `${what}: ${err.message}`, { cause: err }));
  }
}

function parseRun(body: string, status: number): Run {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch (err) {
    throw new DaemonError('ERR_API_SCHEMA', `Letta API answered ${status} with a body that is not JSON: ${snippet(body)}`, { cause: err });
  }
  const parsed = runSchema.safeParse(json);
  if (!parsed.success) {
    throw new DaemonError('ERR_API_SCHEMA', `Letta API answered ${status} with a body that is not a Run: ${z.prettifyError(parsed.error)}`, {
      cause: parsed.error,
    });
  }
  return parsed.data;
}

function snippet(body: string): string {
  const flat = body.replace(/\s+/g, ' ').trim();
  return flat.length > 200 ? `${flat.slice(0, 200)}…` : flat;
}
