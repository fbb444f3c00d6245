/**
 * One error type with a stable `code` union. Callers match `err.code`, never the class or
 * the message (undici's convention), and the original error rides along as `cause`.
 */
export type ErrorCode =
  | 'ERR_CONFIG'
  | 'ERR_USAGE'
  | 'ERR_API_STATUS'
  | 'ERR_API_SCHEMA'
  | 'ERR_API_NETWORK'
  | 'ERR_API_TIMEOUT'
  | 'ERR_API_BODY_TOO_LARGE'
  | 'ERR_LAYOUT'
  | 'ERR_STOPPED';

export interface DaemonErrorOptions {
  cause?: unknown;
  /** HTTP status behind the error, when there was one. */
  status?: number;
  /** Server-requested delay before another attempt (from `Retry-After`). */
  retryAfterMs?: number;
}

export class DaemonError extends Error {
  readonly code: ErrorCode;
  readonly status: number | undefined;
  readonly retryAfterMs: number | undefined;

  constructor(code: ErrorCode, message: string, options: DaemonErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DaemonError';
    this.code = code;
    this.status = options.status;
    this.retryAfterMs = options.retryAfterMs;
  }
}

export function isDaemonError(err: unknown, code?: ErrorCode): err is DaemonError {
  return err instanceof DaemonError && (code === undefined || err.code === code);
}
