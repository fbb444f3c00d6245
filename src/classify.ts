/**
 * Pure decisions about what the Letta API said. One table for HTTP statuses (also used by the
 * retry layer, so "transient" means the same thing everywhere) and one for run statuses.
 */

export type StatusClass = 'ok' | 'not_found' | 'bad_id' | 'auth' | 'transient' | 'unexpected';

export function classifyStatus(status: number): StatusClass {
  if (status >= 200 && status < 300) return 'ok';
  if (status === 404) return 'not_found';
  // 422 is FastAPI's validation answer for a path parameter it cannot accept.
  if (status === 400 || status === 422) return 'bad_id';
  if (status === 401 || status === 403) return 'auth';
  // 409 comes with Retry-After: 1 when Letta's database is locked; 425 Too Early; 408 timeout.
  if (status === 408 || status === 409 || status === 425 || status === 429 || (status >= 500 && status < 600)) {
    return 'transient';
  }
  return 'unexpected';
}

/** Socket-level failures worth another attempt: undici's codes and the OS's. */
const TRANSIENT_NETWORK_CODES = new Set([
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
]);

export function isTransientNetworkError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && TRANSIENT_NETWORK_CODES.has(code);
}

/** `Retry-After` as milliseconds: delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | string[] | undefined, now: number): number | undefined {
  const raw = Array.isArray(value) ? value[0] : value;
  if (raw === undefined || raw.trim() === '') return undefined;
  if (/^\s*\d+\s*$/.test(raw)) return Number(raw) * 1000;
  // Only an IMF-fixdate (RFC 9110); Date.parse alone would read "1.5" or "x 2099" as dates.
  if (!/^\s*[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT\s*$/.test(raw)) return undefined;
  const at = Date.parse(raw);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

export const TERMINAL_STATUSES = ['completed', 'failed', 'cancelled'] as const;
export type TerminalStatus = (typeof TERMINAL_STATUSES)[number];

/** Statuses Letta has used for runs still in progress, including older job statuses. */
const PENDING_STATUSES = new Set(['created', 'running', 'pending']);

export type RunState =
  | { terminal: true; type: `run.${TerminalStatus}` }
  | { terminal: false; known: boolean };

/**
 * Status alone decides: `requires_approval`, `max_steps` and `tool_rule` stop reasons come with
 * status `completed`, and Letta Cloud may report a terminal status before `stop_reason` is set.
 */
export function classifyRun(status: string | null | undefined): RunState {
  if (status === 'completed' || status === 'failed' || status === 'cancelled') {
    return { terminal: true, type: `run.${status}` };
  }
  return { terminal: false, known: status == null || PENDING_STATUSES.has(status) };
}

/** Letta may send naive timestamps (`2025-10-17T21:53:05.123456`); they are UTC. */
export function parseLettaTime(value: string | null | undefined): number | undefined {
  if (!value) return undefined;
  const zoned = /([zZ]|[+-]\d\d:?\d\d)$/.test(value) ? value : `${value}Z`;
  const ms = Date.parse(zoned);
  return Number.isNaN(ms) ? undefined : ms;
}
