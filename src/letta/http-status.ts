/**
 * What an HTTP status (or a socket error) from the Letta API means for a request: one table,
 * used by the client and its retry layer alike, so "transient" means the same thing everywhere.
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
