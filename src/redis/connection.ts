import { Cluster, Redis, type ClusterNode, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import { hostPort, type Config } from '../config.ts';
import type { RedisClient } from './scripts.ts';

/**
 * Connections to the Redis a team has: one node (REDIS_URL), a Redis Cluster
 * (REDIS_CLUSTER_NODES: ioredis's Cluster client follows MOVED/ASK, TRYAGAIN, failovers and
 * resharding by itself) or a Sentinel-managed master (REDIS_SENTINELS + REDIS_SENTINEL_MASTER:
 * ioredis asks the sentinels where the master is, and asks again on a failover). The daemon,
 * the CLI and the simulator's feeder all connect here.
 *
 * The daemon's commands wait through a disconnect rather than fail after a few retries
 * (maxRetriesPerRequest: null): the loops would only retry them, and a settle that waits is
 * better than one dropped. A command timeout still bounds every wait, so loops keep turning.
 * The CLI's fail fast instead.
 */
export type Role =
  /** The daemon's main connection. */
  | { kind: 'daemon' }
  /** A connection held by blocking waits (BLMOVE) of up to `blockMs`. */
  | { kind: 'blocking'; blockMs: number }
  /** A short-lived CLI connection: fail fast. */
  | { kind: 'cli' };

// ioredis's constructors want replyMapping without `undefined`, which RedisOptions allows.
type Options = Omit<RedisOptions, 'replyMapping'>;

const COMMAND_TIMEOUT_MS = 10_000;
const CLI_CONNECT_TIMEOUT_MS = 5_000;

export type Deployment = 'standalone' | 'cluster' | 'sentinel';

export function deploymentOf(redis: Config['redis']): Deployment {
  if (redis.clusterNodes.length > 0) return 'cluster';
  if (redis.sentinels.length > 0) return 'sentinel';
  return 'standalone';
}

/** Reconnect backoff: this much longer per attempt, up to the cap. */
const RECONNECT_STEP_MS = 100;
const RECONNECT_MAX_MS = 2_000;
const reconnect = (times: number) => Math.min(RECONNECT_STEP_MS * times, RECONNECT_MAX_MS);
/** Redis Cluster: how hard to follow a slot on the move before a command fails. */
const CLUSTER_MAX_REDIRECTIONS = 16;
const CLUSTER_TRY_AGAIN_MS = 100;
const CLUSTER_DOWN_RETRY_MS = 200;
/** Slot map refresh: how long one may take, and how often the map is read anyway. */
const SLOTS_REFRESH_TIMEOUT_MS = 2_000;
const SLOTS_REFRESH_EVERY_MS = 5_000;
const DEFAULT_REDIS_PORT = 6379;
const DEFAULT_SENTINEL_PORT = 26379;

function roleOptions(role: Role): Options {
  switch (role.kind) {
    case 'daemon':
      return { maxRetriesPerRequest: null, commandTimeout: COMMAND_TIMEOUT_MS, retryStrategy: reconnect };
    case 'blocking':
      return { maxRetriesPerRequest: null, commandTimeout: role.blockMs + COMMAND_TIMEOUT_MS, retryStrategy: reconnect };
    case 'cli':
      return { maxRetriesPerRequest: 1, connectTimeout: CLI_CONNECT_TIMEOUT_MS, commandTimeout: CLI_CONNECT_TIMEOUT_MS, retryStrategy: () => null };
  }
}

interface Seed {
  host: string;
  port: number;
  username?: string;
  password?: string;
  tls: boolean;
}

/** A cluster seed: host:port or a redis[s]:// URL (its credentials and TLS apply to every node). */
function parseSeed(seed: string): Seed {
  if (/^rediss?:\/\//i.test(seed)) {
    const url = new URL(seed);
    return {
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: Number(url.port || DEFAULT_REDIS_PORT),
      ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
      ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
      tls: url.protocol === 'rediss:',
    };
  }
  const hp = hostPort(seed);
  if (!hp) throw new Error(`not a Redis node: ${seed}`);
  return { ...hp, tls: false };
}

export function connectRedis(config: Config, role: Role, name: string, log?: Logger): RedisClient {
  const { redis, secrets } = config;
  const base: Options = {
    ...roleOptions(role),
    connectionName: name,
    ...(secrets.redisUsername ? { username: secrets.redisUsername } : {}),
    ...(secrets.redisPassword ? { password: secrets.redisPassword } : {}),
  };
  let client: RedisClient;
  switch (deploymentOf(redis)) {
    case 'cluster': {
      const seeds = redis.clusterNodes.map(parseSeed);
      const withAuth = seeds.find((s) => s.password !== undefined);
      const tls = redis.tls || seeds.some((s) => s.tls);
      const nodes: ClusterNode[] = seeds.map((s) => ({ host: s.host, port: s.port }));
      client = new Cluster(nodes, {
        redisOptions: {
          ...base,
          ...(withAuth?.username ? { username: withAuth.username } : {}),
          ...(withAuth?.password ? { password: withAuth.password } : {}),
          ...(tls ? { tls: {} } : {}),
        } as NonNullable<ClusterOptions['redisOptions']> & { replyMapping?: never },
        scaleReads: 'master',
        maxRedirections: CLUSTER_MAX_REDIRECTIONS,
        retryDelayOnMoved: 0,
        retryDelayOnTryAgain: CLUSTER_TRY_AGAIN_MS,
        retryDelayOnClusterDown: CLUSTER_DOWN_RETRY_MS,
        retryDelayOnFailover: CLUSTER_DOWN_RETRY_MS,
        slotsRefreshTimeout: SLOTS_REFRESH_TIMEOUT_MS,
        slotsRefreshInterval: SLOTS_REFRESH_EVERY_MS,
        clusterRetryStrategy: role.kind === 'cli' ? () => null : reconnect,
        enableReadyCheck: true,
      });
      break;
    }
    case 'sentinel': {
      const options: Options = {
        ...base,
        sentinels: redis.sentinels.map((s) => hostPort(s) ?? { host: s, port: DEFAULT_SENTINEL_PORT }),
        name: redis.sentinelMaster,
        ...(secrets.redisSentinelPassword ? { sentinelPassword: secrets.redisSentinelPassword } : {}),
        ...(redis.tls ? { tls: {}, sentinelTLS: {}, enableTLSForSentinelMode: true } : {}),
        // Subscribe to the sentinels' +switch-master, and reconnect (asking the sentinels
        // again) when the node we hold has become a replica.
        failoverDetector: true,
        reconnectOnError: (err: Error) => (err.message.startsWith('READONLY') ? 2 : false),
        sentinelRetryStrategy: role.kind === 'cli' ? () => null : reconnect,
      };
      client = new Redis(options);
      break;
    }
    default:
      client = new Redis(redis.url, { ...base, ...(redis.tls ? { tls: {} } : {}) });
  }
  watchErrors(client, log);
  return client;
}

/** One log line per outage (message and code only: ioredis errors can carry the AUTH command). */
function watchErrors(client: RedisClient, log: Logger | undefined): void {
  let down = false;
  client.on('error', (err: Error) => {
    if (!down) log?.error({ err: { message: err.message, code: (err as { code?: string }).code } }, 'Redis connection error; reconnecting');
    down = true;
  });
  client.on('ready', () => {
    if (down) log?.warn('Redis connection is back');
    down = false;
  });
}

/** Settings that can silently lose watched runs. Returns one warning per problem. */
export async function redisWarnings(client: RedisClient): Promise<string[]> {
  const warnings: string[] = [];
  try {
    const policy = (await client.config('GET', 'maxmemory-policy')) as unknown as string[];
    if (policy[1] && policy[1] !== 'noeviction') {
      warnings.push(`Redis maxmemory-policy is ${policy[1]}: under memory pressure Redis may evict watched runs; set it to noeviction`);
    }
    const aof = (await client.config('GET', 'appendonly')) as unknown as string[];
    const save = (await client.config('GET', 'save')) as unknown as string[];
    if (aof[1] !== 'yes' && !save[1]) {
      warnings.push('Redis persistence is off (no AOF, no RDB snapshots): a Redis restart loses every watched run; turn on appendonly');
    }
  } catch (err) {
    // Managed Redis often disables CONFIG; say so once rather than guess.
    warnings.push(`cannot read Redis settings (${(err as Error).message}); make sure maxmemory-policy is noeviction and persistence is on`);
  }
  return warnings;
}

/** QUIT when connected (replies in flight arrive first); a client that is not connected just drops. */
export async function closeRedis(client: RedisClient): Promise<void> {
  if (client.status !== 'ready') return dropRedis(client);
  await client.quit().catch(() => dropRedis(client));
}

/**
 * Drops the connection at once (a blocking wait in progress ends), once. Each disconnect()
 * arms a 2 s timer that only the socket's close event clears, so a second call on a closed
 * client held the process for 2 s after the daemon stopped.
 */
export function dropRedis(client: RedisClient): void {
  if (client.status !== 'end') client.disconnect();
}
