import { Redis } from 'ioredis';
import type { Logger } from 'pino';

/**
 * The daemon's Redis connection. Commands wait through a disconnect rather than fail after a
 * few retries (maxRetriesPerRequest: null): the loops would only retry them anyway, and a
 * settle that waits is better than one that is dropped. A command timeout still bounds every
 * wait so loops keep turning (and stay live) while Redis is away.
 */
export function connectRedis(url: string, log: Logger, name: string): Redis {
  const redis = new Redis(url, {
    maxRetriesPerRequest: null,
    commandTimeout: 10_000,
    connectionName: name,
    retryStrategy: (times) => Math.min(100 * times, 2000),
    lazyConnect: false,
  });
  let down = false;
  redis.on('error', (err: Error) => {
    if (!down) log.error({ err: { message: err.message, code: (err as { code?: string }).code } }, 'Redis connection error; reconnecting');
    down = true;
  });
  redis.on('ready', () => {
    if (down) log.warn('Redis connection is back');
    down = false;
  });
  return redis;
}

/** Settings that can silently lose watched runs. Returns one warning per problem. */
export async function redisWarnings(redis: Redis): Promise<string[]> {
  const warnings: string[] = [];
  try {
    const policy = (await redis.config('GET', 'maxmemory-policy')) as string[];
    if (policy[1] && policy[1] !== 'noeviction') {
      warnings.push(`Redis maxmemory-policy is ${policy[1]}: under memory pressure Redis may evict watched runs; set it to noeviction`);
    }
    const aof = (await redis.config('GET', 'appendonly')) as string[];
    const save = (await redis.config('GET', 'save')) as string[];
    if (aof[1] !== 'yes' && !save[1]) {
      warnings.push('Redis persistence is off (no AOF, no RDB snapshots): a Redis restart loses every watched run; turn on appendonly');
    }
  } catch (err) {
    // Managed Redis often disables CONFIG; say so once rather than guess.
    warnings.push(`cannot read Redis settings (${(err as Error).message}); make sure maxmemory-policy is noeviction and persistence is on`);
  }
  return warnings;
}
