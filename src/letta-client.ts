import pRetry from 'p-retry';
import { Agent, request, type Dispatcher } from 'undici';
import { z } from 'zod';
import { classifyStatus, isTransientNetworkError, parseRetryAfter } from './classify.ts';
import type { Clock } from './clock.ts';
import { DaemonError, isDaemonError } from './errors.ts';
import { RUN_ID_PATTERN } from './intake.ts';

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
  | { kind: 'auth'; status: number };

export interface LettaClient {
  /**
   * One poll. Transient faults are retried here (and only here); what is still failing after
   * that is thrown as a DaemonError (ERR_API_STATUS / _NETWORK / _TIMEOUT / _BODY_TOO_LARGE /
   * _SCHEMA) for the caller to reschedule.
   */
  getRun(runId: string, signal: AbortSignal): Promise<RunLookup>;
  close(): Promise<void>;
}

export interface LettaClientOptions {
  baseUrl: string;
  apiKey?: string | undefined;
  requestTimeoutMs: number;
  maxResponseBytes: number;
  retries: number;
  retryMinMs: number;
  retryMaxMs: number;
  /** A Retry-After longer than this ends the in-poll retries; the run is rescheduled instead. */
  retryAfterCapMs: number;
  clock: Clock;
  /** Tests pass an undici MockAgent; by default a keep-alive pool sized to the concurrency. */
  dispatcher?: Dispatcher;
  connections?: number;
  /** Called for every failed attempt, retried or not (metrics). */
  onAttemptError?: (err: DaemonError) => void;
  userAgent?: string;
}

interface RawAnswer {
  status: number;
  body: string;
}

export function makeLettaClient(o: LettaClientOptions): LettaClient {
  const ownDispatcher = o.dispatcher === undefined;
  const dispatcher =
    o.dispatcher ?? new Agent({ keepAliveTimeout: 30_000, connections: o.connections ?? null, pipelining: 1 });
  const base = o.baseUrl.replace(/\/+$/, '');
  // identity: undici's request() does not decompress, so a compressed body could not be read,
  // and a body claiming an encoding we did not ask for is refused rather than trusted.
  const headers: Record<string, string> = {
    accept: 'application/json',
    'accept-encoding': 'identity',
    'user-agent': o.userAgent ?? 'letta-run-watcher',
  };
  if (o.apiKey) headers['authorization'] = `Bearer ${o.apiKey}`;

  async function attempt(url: string, signal: AbortSignal): Promise<RawAnswer> {
    const timeout = AbortSignal.timeout(o.requestTimeoutMs);
    const both = AbortSignal.any([signal, timeout]);
    try {
      const res = await request(url, { method: 'GET', headers, signal: both, dispatcher });
      const cls = classifyStatus(res.statusCode);
      if (cls === 'transient') {
        await res.body.dump({ limit: 64 * 1024 }).catch(() => {});
        const retryAfterMs = parseRetryAfter(res.headers['retry-after'], o.clock.now());
        throw new DaemonError('ERR_API_STATUS', `Letta API answered ${res.statusCode}`, {
          status: res.statusCode,
          ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
        });
      }
      const encoding = String(res.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
      if (encoding !== 'identity' && encoding !== '') {
        res.body.destroy();
        throw new DaemonError('ERR_API_SCHEMA', `Letta API answered with content-encoding ${encoding}, which was not asked for`, { status: res.statusCode });
      }
      return { status: res.statusCode, body: await readCapped(res, o.maxResponseBytes) };
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      if (isDaemonError(err)) throw err;
      if (timeout.aborted) {
        throw new DaemonError('ERR_API_TIMEOUT', `Letta API did not answer within ${o.requestTimeoutMs} ms`, { cause: err });
      }
      if (isTransientNetworkError(err)) {
        throw new DaemonError('ERR_API_NETWORK', `cannot reach Letta API: ${(err as Error).message}`, { cause: err });
      }
      throw new DaemonError('ERR_API_NETWORK', `request to Letta API failed: ${(err as Error).message}`, { cause: err });
    }
  }

  function retryable(err: unknown): boolean {
    if (!isDaemonError(err)) return false;
    if (err.code === 'ERR_API_TIMEOUT') return true;
    if (err.code === 'ERR_API_NETWORK') return isTransientNetworkError(err.cause);
    if (err.code === 'ERR_API_STATUS') return (err.retryAfterMs ?? 0) <= o.retryAfterCapMs;
    return false;
  }

  return {
    async getRun(runId, signal) {
      // Intake enforces this already; checked again so no ID ("..", "a/b") can leave /v1/runs/.
      if (!RUN_ID_PATTERN.test(runId)) return { kind: 'bad_id', status: 400 };
      const url = `${base}/v1/runs/${encodeURIComponent(runId)}`;
      // p-retry wraps only the transport; parsing happens after it, since a ZodError would
      // otherwise look like a retryable failure.
      const answer = await pRetry(() => attempt(url, signal), {
        retries: o.retries,
        minTimeout: o.retryMinMs,
        maxTimeout: o.retryMaxMs,
        factor: 2,
        randomize: true,
        signal,
        shouldRetry: ({ error }) => retryable(error),
        onFailedAttempt: async ({ error, retryDelay, retriesLeft }) => {
          if (isDaemonError(error)) o.onAttemptError?.(error);
          // Honour Retry-After: wait out whatever p-retry's own delay does not cover.
          const wanted = isDaemonError(error) ? (error.retryAfterMs ?? 0) : 0;
          if (retriesLeft > 0 && retryable(error) && wanted > retryDelay) {
            await o.clock.sleep(wanted - retryDelay, signal);
          }
        },
      });
      switch (classifyStatus(answer.status)) {
        case 'ok':
          try {
            return { kind: 'found', run: parseRun(answer.body, answer.status) };
          } catch (err) {
            if (isDaemonError(err)) o.onAttemptError?.(err);
            throw err;
          }
        case 'not_found':
          return { kind: 'not_found' };
        case 'bad_id':
          return { kind: 'bad_id', status: answer.status };
        case 'auth':
          return { kind: 'auth', status: answer.status };
        default: {
          const err = new DaemonError('ERR_API_STATUS', `Letta API answered ${answer.status}: ${snippet(answer.body)}`, {
            status: answer.status,
          });
          o.onAttemptError?.(err);
          throw err;
        }
      }
    },
    async close() {
      if (ownDispatcher) await dispatcher.close();
    },
  };
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

async function readCapped(res: Dispatcher.ResponseData, limit: number): Promise<string> {
  const declared = Number(res.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    res.body.destroy();
    throw new DaemonError('ERR_API_BODY_TOO_LARGE', `Letta API answer of ${declared} bytes exceeds the ${limit}-byte cap`, { status: res.statusCode });
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      res.body.destroy();
      throw new DaemonError('ERR_API_BODY_TOO_LARGE', `Letta API answer exceeds the ${limit}-byte cap`, { status: res.statusCode });
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function snippet(body: string): string {
  const flat = body.replace(/\s+/g, ' ').trim();
  return flat.length > 200 ? `${flat.slice(0, 200)}…` : flat;
}
