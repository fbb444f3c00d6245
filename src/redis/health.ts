import type { Logger } from 'pino';

/**
 * What went wrong with Redis, in words an operator can act on. Loops report every failure
 * here; each distinct problem is logged once (until the loop that saw it succeeds again) and
 * counted in letta_watcher_redis_errors_total by cause.
 */
export type RedisErrorCause = 'wrong_type' | 'readonly' | 'cluster_down' | 'redirections' | 'timeout' | 'connection' | 'other';

export interface RedisProblem {
  cause: RedisErrorCause;
  /** A sentence naming the key or the condition; never a secret. */
  message: string;
}

const WRONG_TYPE = /key (\S+) holds an? (\w+), expected an? (\w+)/;

export function classifyRedisError(err: unknown): RedisProblem {
  const text = String((err as { message?: unknown } | null)?.message ?? err);
  const wrong = WRONG_TYPE.exec(text);
  if (wrong) return { cause: 'wrong_type', message: `Redis key ${wrong[1]} holds a ${wrong[2]}, expected a ${wrong[3]}` };
  if (/\bWRONGTYPE\b/.test(text)) return { cause: 'wrong_type', message: `a Redis key holds the wrong type (${text.slice(0, 200)})` };
  if (/^READONLY\b|\bREADONLY\b/.test(text)) return { cause: 'readonly', message: 'Redis refuses writes (READONLY: connected to a replica, e.g. after a failover)' };
  if (/\bCLUSTERDOWN\b/.test(text)) return { cause: 'cluster_down', message: 'Redis Cluster is down (CLUSTERDOWN)' };
  if (/Too many Cluster redirections|\bMOVED\b|\bASK\b|\bTRYAGAIN\b/.test(text)) return { cause: 'redirections', message: 'Redis Cluster keeps redirecting (slots moving, MOVED/ASK)' };
  if (/timed out|timeout/i.test(text)) return { cause: 'timeout', message: 'Redis does not answer in time' };
  if (/ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ENOTFOUND|Connection is closed|Stream isn't writeable|connect/i.test(text)) return { cause: 'connection', message: 'Redis is not connected' };
  return { cause: 'other', message: `Redis error: ${text.slice(0, 200)}` };
}

export interface RedisHealth {
  /** A failure seen by `where` (a loop's name). */
  report(where: string, err: unknown): RedisProblem;
  /** `where` succeeded: its problem, if any, is over. */
  recovered(where: string): void;
}

export function makeRedisHealth(log: Logger, count: (cause: RedisErrorCause) => void): RedisHealth {
  const current = new Map<string, string>();
  return {
    report(where, err) {
      const problem = classifyRedisError(err);
      count(problem.cause);
      if (current.get(where) !== problem.message) {
        // One line per problem, however many loops run into it.
        const seen = [...current.values()].includes(problem.message);
        current.set(where, problem.message);
        if (!seen) log.error({ where, cause: problem.cause }, `${problem.message}; the daemon waits and retries, nothing is lost`);
      }
      return problem;
    },
    recovered(where) {
      if (!current.has(where)) return;
      const message = current.get(where);
      current.delete(where);
      if (![...current.values()].includes(message as string)) log.warn({ where }, `Redis works again (${where})`);
    },
  };
}
