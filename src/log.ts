import { createRequire } from 'node:module';
import pino, { type DestinationStream, type Logger } from 'pino';

/**
 * pino with secrets redacted wherever they could ride along (request headers, error objects
 * carrying a config). JSON lines by default; pretty lines when stdout is a terminal and
 * pino-pretty is installed (it is a dev dependency, absent from the production image).
 */
export const REDACT_PATHS = [
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
  'apiKey',
  '*.apiKey',
  'secrets',
  '*.secrets',
  'webhookSecrets',
  '*.webhookSecrets',
  // ioredis errors carry the command that failed; its handshake (HELLO ... AUTH) holds the
  // Redis password.
  'command',
  '*.command',
  'err.cause.command',
];

export function makeLogger(level: string, options: { pretty?: boolean; destination?: DestinationStream } = {}): Logger {
  const base = { level, base: { service: 'letta-run-watcher' }, redact: { paths: REDACT_PATHS, censor: '[redacted]' } };
  if (options.destination) return pino(base, options.destination);
  if (options.pretty && hasPinoPretty()) {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,service' } } });
  }
  return pino(base);
}

function hasPinoPretty(): boolean {
  try {
    createRequire(import.meta.url).resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
}
