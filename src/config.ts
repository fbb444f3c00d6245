import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { DaemonError } from './errors.ts';
import { OPS_EVENT_TYPES, RUN_EVENT_TYPES } from './events/event.ts';
import { STOP_REASONS } from './letta/run-state.ts';
import { hashTagOf } from './redis/keys.ts';
import { redactUrl } from './redact.ts';
import type { IntakeLimits } from './intake/store.ts';
import { formatExists, formatNames } from './webhooks/format.ts';
import { targetName, typeMatches } from './webhooks/targets.ts';

/**
 * Configuration: `config/default.json`, then the JSON file named by WATCHER_CONFIG, then the
 * environment. One zod schema validates the merged result before anything connects; every bad
 * key is reported at once, named as the user wrote it (env var or file key). Secrets come only
 * from the environment and are never echoed back in an error.
 */

const ms = z.number().int().nonnegative();
const positiveInt = z.number().int().positive();
const fraction = z.number().min(0).max(1);
const httpUrl = z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' });

/** An event type, or a family of them: `run.*`, `endpoint.*`, `delivery.*`, `*`. */
const eventTypePattern = z.string().refine((t) => matchesAnyType(t), {
  error: (i) => `must be an event type (${[...RUN_EVENT_TYPES, ...OPS_EVENT_TYPES].join(', ')}) or a wildcard (run.*, endpoint.*, delivery.*, *) (got ${JSON.stringify(i.input)})`,
});

const webhookTarget = z
  .strictObject({
    url: httpUrl,
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be 1-64 letters, digits, "_", "." or "-"').optional(),
    format: z
      .string()
      .refine(formatExists, { error: (i) => `must be one of ${formatNames().join(', ')} (got ${JSON.stringify(i.input)})` })
      .default('event'),
    // Header names are case-insensitive: lowercased, so the daemon's own (content-type,
    // user-agent, webhook-*) always replace a target's, whatever case the file used.
    headers: z
      .record(z.string(), z.string())
      .transform((headers) => Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value])))
      .default({}),
    /** Which events go here (default: the format's, else run.*); operator events only when listed. */
    types: z.array(eventTypePattern).min(1).optional(),
    /** Only run events whose stop reason is one of these (e.g. requires_approval). */
    stopReasons: z.array(z.enum(STOP_REASONS, { error: (i) => `must be one of Letta's stop reasons (${STOP_REASONS.join(', ')}) (got ${JSON.stringify(i.input)})` })).min(1).optional(),
    /** Alertmanager: static labels on every alert. */
    labels: z
      .record(z.string(), z.string())
      .superRefine((labels, ctx) => {
        for (const name of Object.keys(labels)) {
          if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) ctx.addIssue({ code: 'custom', path: [name], message: 'must be a Prometheus label name (letters, digits, "_"; not starting with a digit)' });
        }
      })
      .default({}),
    /** PagerDuty: the environment variable holding the routing key (never the key itself). */
    routingKeyEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name').optional(),
    /** Alertmanager: how long a one-off alert stays active. */
    resolveAfterMs: positiveInt.default(3_600_000),
    /** Alertmanager: how often a stalled run's alert is re-sent while it stays stalled. */
    repeatMs: z.number().int().min(1000).default(300_000),
    /** CloudEvents: the `source` attribute. */
    source: z.string().min(1).default('urn:letta-run-watcher'),
  })
  .refine((t) => t.format !== 'pagerduty' || t.routingKeyEnv !== undefined, { error: 'a pagerduty target needs the name of the environment variable that holds its routing key', path: ['routingKeyEnv'] });

const schema = z.strictObject({
  letta: z.strictObject({
    baseUrl: httpUrl,
    requestTimeoutMs: positiveInt,
    maxResponseBytes: positiveInt,
    retries: z.number().int().min(0).max(10),
    retryMinMs: ms,
    retryMaxMs: ms,
    retryAfterCapMs: ms,
    authPauseMs: positiveInt,
    listLimit: z.number().int().min(1).max(1000),
    maxListBytes: z.number().int().min(1024),
  }),
  redis: z.strictObject({
    url: z.url({ protocol: /^rediss?$/, error: 'must be a redis:// or rediss:// URL (percent-encode "/", "?", "#" and "@" in a password)' }),
    clusterNodes: z.array(z.string().refine(validSeed, 'must be host:port or a redis:// or rediss:// URL')),
    sentinels: z.array(z.string().refine((s) => hostPort(s) !== undefined, 'must be host:port')),
    sentinelMaster: z.string(),
    tls: z.boolean(),
    keyPrefix: z.string().min(1).max(64).regex(/^[^\s]+$/, 'must not contain spaces'),
    partitions: z.number().int().min(1).max(1024),
    waitReplicas: z.number().int().min(0).max(16),
    waitTimeoutMs: positiveInt,
  }),
  poll: z.strictObject({
    concurrency: z.number().int().min(1).max(10_000),
    maxRps: z.number().min(0),
    initialMs: positiveInt,
    maxMs: positiveInt,
    factor: z.number().min(1).max(10),
    jitter: fraction,
    maxWatchMs: positiveInt,
    leaseMs: z.number().int().min(1000),
    claimBatch: z.number().int().min(1).max(10_000),
    reconcileEveryMs: ms,
    safetyGapMs: positiveInt,
    apiRps: z.number().min(0),
    /** A run still going this long after it was created is reported once as run.stalled; 0 = never. */
    stalledAfterMs: ms,
  }),
  callbacks: z.strictObject({ ratePerSecond: z.number().min(1) }),
  intake: z.strictObject({
    batch: z.number().int().min(1).max(10_000),
    batchBytes: z.number().int().min(1024).max(64 * 1024 * 1024),
    idleMs: positiveInt,
    maxEntryBytes: z.number().int().min(256).max(16 * 1024 * 1024),
    maxDepth: z.number().int().min(2).max(100),
    maxTargetsPerRun: z.number().int().min(1).max(256),
  }),
  events: z.strictObject({ streamMaxLen: positiveInt, streamHardMaxLen: positiveInt, trimEveryMs: positiveInt }),
  webhooks: z.strictObject({
    urls: z.array(httpUrl),
    targets: z.array(webhookTarget),
    allowedHosts: z.array(z.string().min(1)),
    allowPrivateAddresses: z.boolean(),
    attemptTimeoutMs: positiveInt,
    scheduleMs: z.array(ms).min(1).max(50),
    jitter: fraction,
    maxBodyBytes: z.number().int().min(1024),
    concurrency: z.number().int().min(1).max(1000),
    retryAfterCapMs: ms,
    leaseMs: z.number().int().min(1000),
    /** endpoint.failing after this many deliveries in a row got no 2xx. */
    failingAfter: z.number().int().min(1).max(1000),
    /** At most one operator event of a kind per endpoint per this many ms. */
    opsEventGapMs: ms,
  }),
  http: z.strictObject({
    host: z.string().min(1),
    port: z.number().int().min(0).max(65535),
  }),
  log: z.strictObject({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  }),
  shutdownGraceMs: ms,
  secrets: z.strictObject({
    lettaApiKey: z.string().min(1).optional(),
    redisUsername: z.string().min(1).optional(),
    redisPassword: z.string().min(1).optional(),
    redisSentinelPassword: z.string().min(1).optional(),
    callbackToken: z.string().min(16, 'must be at least 16 characters (value not shown)').optional(),
    webhookSecrets: z.array(
      z.string().regex(/^whsec_[A-Za-z0-9+/]+={0,2}$/, 'must be whsec_ followed by base64 (value not shown)'),
    ),
    /** Routing keys (PagerDuty) by the environment variable a target names. */
    routingKeys: z.record(z.string(), z.string()),
  }),
});

export type Config = z.output<typeof schema>;
export type WebhookTargetConfig = z.output<typeof webhookTarget>;

type EnvKind = 'string' | 'number' | 'boolean' | 'list' | 'secret' | 'secretList';
/** Every environment variable the daemon reads, and where it lands in the config. */
export const ENV_VARS: readonly (readonly [name: string, path: string, kind: EnvKind])[] = [
  ['LETTA_BASE_URL', 'letta.baseUrl', 'string'],
  ['LETTA_API_KEY', 'secrets.lettaApiKey', 'secret'],
  ['REDIS_URL', 'redis.url', 'string'],
  ['REDIS_CLUSTER_NODES', 'redis.clusterNodes', 'list'],
  ['REDIS_SENTINELS', 'redis.sentinels', 'list'],
  ['REDIS_SENTINEL_MASTER', 'redis.sentinelMaster', 'string'],
  ['REDIS_TLS', 'redis.tls', 'boolean'],
  ['REDIS_USERNAME', 'secrets.redisUsername', 'secret'],
  ['REDIS_PASSWORD', 'secrets.redisPassword', 'secret'],
  ['REDIS_SENTINEL_PASSWORD', 'secrets.redisSentinelPassword', 'secret'],
  ['WATCHER_KEY_PREFIX', 'redis.keyPrefix', 'string'],
  ['WATCHER_PARTITIONS', 'redis.partitions', 'number'],
  ['WATCHER_CONCURRENCY', 'poll.concurrency', 'number'],
  ['WATCHER_MAX_RPS', 'poll.maxRps', 'number'],
  ['WATCHER_API_RPS', 'poll.apiRps', 'number'],
  ['WATCHER_RECONCILE_MS', 'poll.reconcileEveryMs', 'number'],
  ['WATCHER_SAFETY_GAP_MS', 'poll.safetyGapMs', 'number'],
  ['WATCHER_STALLED_AFTER_MS', 'poll.stalledAfterMs', 'number'],
  ['WATCHER_CALLBACK_TOKEN', 'secrets.callbackToken', 'secret'],
  ['WATCHER_POLL_INITIAL_MS', 'poll.initialMs', 'number'],
  ['WATCHER_POLL_MAX_MS', 'poll.maxMs', 'number'],
  ['WATCHER_POLL_FACTOR', 'poll.factor', 'number'],
  ['WATCHER_POLL_JITTER', 'poll.jitter', 'number'],
  ['WATCHER_MAX_WATCH_MS', 'poll.maxWatchMs', 'number'],
  ['WATCHER_REQUEST_TIMEOUT_MS', 'letta.requestTimeoutMs', 'number'],
  ['WATCHER_WEBHOOK_URLS', 'webhooks.urls', 'list'],
  ['WATCHER_WEBHOOK_SECRET', 'secrets.webhookSecrets', 'secretList'],
  ['WATCHER_WEBHOOK_ALLOWED_HOSTS', 'webhooks.allowedHosts', 'list'],
  ['WATCHER_HTTP_HOST', 'http.host', 'string'],
  ['WATCHER_HTTP_PORT', 'http.port', 'number'],
  ['WATCHER_LOG_LEVEL', 'log.level', 'string'],
  ['WATCHER_SHUTDOWN_GRACE_MS', 'shutdownGraceMs', 'number'],
];

export type Env = Readonly<Record<string, string | undefined>>;

export interface LoadConfigOptions {
  env: Env;
  /** Reads a file as text; tests pass their own. */
  readFile?: (path: string) => string;
}

const defaultsUrl = new URL('../config/default.json', import.meta.url);

export function loadConfig({ env, readFile = (p) => readFileSync(p, 'utf8') }: LoadConfigOptions): Config {
  const problems: string[] = [];
  const merged = structuredClone(JSON.parse(readFileSync(defaultsUrl, 'utf8')) as Record<string, unknown>);
  merged['secrets'] = { webhookSecrets: [], routingKeys: {} };
  /** Where each config path came from, so an error names what the user actually wrote. */
  const origin = new Map<string, Origin>();

  const file = env['WATCHER_CONFIG'];
  if (file) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFile(file));
    } catch (err) {
      throw new DaemonError('ERR_CONFIG', `invalid configuration:\n  WATCHER_CONFIG: cannot read ${file} as JSON (${(err as Error).message})`, { cause: err });
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      problems.push(`WATCHER_CONFIG: ${file} must hold a JSON object`);
    } else if ('secrets' in parsed) {
      problems.push(`${file}: secrets: secrets come only from the environment (LETTA_API_KEY, WATCHER_WEBHOOK_SECRET, REDIS_PASSWORD, ...)`);
    } else {
      mergeInto(merged, parsed as Record<string, unknown>, '', (path) => origin.set(path, { name: `${file}: ${path}` }));
    }
  }

  for (const [name, path, kind] of ENV_VARS) {
    const raw = env[name];
    if (raw === undefined || raw.trim() === '') continue;
    const secret = kind === 'secret' || kind === 'secretList';
    // URLs may carry credentials (redis://:password@host): echo them with the userinfo masked.
    origin.set(path, secret ? { name, env: true } : { name, env: true, raw: kind === 'list' ? raw.split(',').map((u) => redactUrl(u.trim())).join(',') : redactUrl(raw) });
    setPath(merged, path, envValue(raw, kind));
  }

  // A target's routing key comes from the environment variable it names, never the file.
  const targets = (merged['webhooks'] as { targets?: unknown } | undefined)?.targets;
  if (Array.isArray(targets)) {
    targets.forEach((t: unknown, i) => {
      const name = isPlainObject(t) ? t['routingKeyEnv'] : undefined;
      if (typeof name !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) return;
      const value = env[name]?.trim();
      if (value) (merged['secrets'] as { routingKeys: Record<string, string> }).routingKeys[name] = value;
      else problems.push(`${file ? `${file}: ` : ''}webhooks.targets.${i}.routingKeyEnv: environment variable ${name} is not set`);
    });
  }

  const result = schema.safeParse(merged);
  if (!result.success) {
    for (const issue of result.error.issues) {
      if (issue.code === 'unrecognized_keys') {
        // zod points at the parent object; name the keys themselves, and the file they came from.
        for (const key of issue.keys) {
          const keyPath = [...issue.path.map(String), key].join('.');
          problems.push(`${file && origin.has(keyPath) ? `${file}: ` : ''}${keyPath}: unknown setting`);
        }
        continue;
      }
      const path = issue.path.join('.');
      const from = originOf(origin, issue.path.map(String));
      const label = from?.name ?? (path || '(root)');
      const got = from?.raw === undefined ? '' : ` (got ${JSON.stringify(from.raw)})`;
      problems.push(`${label}: ${issue.message}${got}`);
    }
  }
  if (result.success) {
    const { poll, webhooks, redis, events } = result.data;
    if (poll.maxMs < poll.initialMs) problems.push(`WATCHER_POLL_MAX_MS: must be at least WATCHER_POLL_INITIAL_MS (${poll.initialMs})`);
    if (poll.safetyGapMs < poll.initialMs) problems.push(`WATCHER_SAFETY_GAP_MS: must be at least WATCHER_POLL_INITIAL_MS (${poll.initialMs})`);
    if (webhooks.leaseMs <= webhooks.attemptTimeoutMs / 3) {
      // Leases are renewed every third of their length while an attempt runs.
      problems.push(`webhooks.leaseMs: must exceed a third of webhooks.attemptTimeoutMs (${webhooks.attemptTimeoutMs} ms)`);
    }
    problems.push(...repeatedTargetNames(webhooks));
    if (events.streamHardMaxLen < events.streamMaxLen) problems.push(`events.streamHardMaxLen: must be at least events.streamMaxLen (${events.streamMaxLen})`);
    const deployments = [
      origin.has('redis.url') ? 'REDIS_URL' : undefined,
      redis.clusterNodes.length > 0 ? 'REDIS_CLUSTER_NODES' : undefined,
      redis.sentinels.length > 0 ? 'REDIS_SENTINELS' : undefined,
    ].filter((d) => d !== undefined);
    if (deployments.length > 1) problems.push(`${deployments.join(', ')}: set only one of them (standalone, Cluster or Sentinel)`);
    if (redis.sentinels.length > 0 && redis.sentinelMaster === '') problems.push('REDIS_SENTINEL_MASTER: the master group name is needed with REDIS_SENTINELS');
    const tagged = hashTagOf(`${redis.keyPrefix}:x`) !== undefined;
    if (redis.partitions > 1 && tagged) {
      problems.push(`WATCHER_KEY_PREFIX: with WATCHER_PARTITIONS > 1 each partition carries its own hash tag, so the prefix must not hold one (got ${JSON.stringify(redis.keyPrefix)})`);
    }
    if (redis.clusterNodes.length > 0 && redis.partitions === 1 && !tagged) {
      problems.push(`WATCHER_KEY_PREFIX: on Redis Cluster with one partition the prefix needs a hash tag so the keys share a slot, e.g. {${redis.keyPrefix}}; or set WATCHER_PARTITIONS to the number of partitions to spread over the masters`);
    }
  }
  if (problems.length > 0 || !result.success) {
    throw new DaemonError('ERR_CONFIG', `invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  }
  return deepFreeze(result.data);
}

/**
 * Each target's deliveries are stored under its name, so two targets with one name would be
 * one: refuse that. An unnamed target is named by a hash of its URL (WATCHER_WEBHOOK_URLS too).
 */
function repeatedTargetNames(webhooks: Config['webhooks']): string[] {
  const problems: string[] = [];
  const seen = new Map<string, string>();
  const all = [...webhooks.urls.map((url, i) => ({ url, name: undefined, where: `WATCHER_WEBHOOK_URLS[${i}]` })), ...webhooks.targets.map((t, i) => ({ ...t, where: `webhooks.targets.${i}` }))];
  for (const t of all) {
    const name = targetName(t);
    const first = seen.get(name);
    if (first === undefined) seen.set(name, t.where);
    else if (t.name !== undefined) problems.push(`${t.where}.name: ${JSON.stringify(name)} is already the name of ${first}; target names must be unique`);
    else problems.push(`${t.where}: the same URL as ${first}; give one of them a name (an unnamed target is named after its URL)`);
  }
  return problems;
}

/** Whether a target's `types` entry names an event type or a family of them. */
function matchesAnyType(pattern: string): boolean {
  return [...RUN_EVENT_TYPES, ...OPS_EVENT_TYPES].some((type) => typeMatches([pattern], type));
}

/** A Redis Cluster seed: host:port, or a redis:// / rediss:// URL. */
function validSeed(seed: string): boolean {
  if (/^rediss?:\/\//i.test(seed)) {
    try {
      return new URL(seed).hostname !== '';
    } catch {
      return false;
    }
  }
  return hostPort(seed) !== undefined;
}

/** `host:port` (IPv6 in brackets), or undefined. */
export function hostPort(s: string): { host: string; port: number } | undefined {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(s.trim());
  const port = Number(m?.[2]);
  if (!m?.[1] || port < 1 || port > 65535) return undefined;
  return { host: m[1].replace(/^\[|\]$/g, ''), port };
}

/** The longest a run may be watched, whatever max_watch_ms an entry asks for. */
export const MAX_WATCH_CAP_MS = 30 * 24 * 3600 * 1000;

/** The intake rules' limits: the daemon's intake and `enqueue` use the same ones. */
export function intakeLimits(config: Config): IntakeLimits {
  return {
    batch: config.intake.batch,
    batchBytes: config.intake.batchBytes,
    maxEntryBytes: config.intake.maxEntryBytes,
    defaultMaxWatchMs: config.poll.maxWatchMs,
    maxWatchCapMs: Math.max(config.poll.maxWatchMs, MAX_WATCH_CAP_MS),
    maxDepth: config.intake.maxDepth,
    maxTargetsPerRun: config.intake.maxTargetsPerRun,
  };
}

/** With WAIT, how much longer than its timeout a commit holds its deliveries back. */
const WAIT_HOLD_MARGIN_MS = 1_000;

/**
 * When a new delivery's first attempt is due: the schedule's first step, plus, with
 * redis.waitReplicas, the hold that lets replicas confirm the commit before any webhook goes
 * (polling/runs.ts releases it early once they have).
 */
export function firstDeliveryDelayMs(config: Config): number {
  const hold = config.redis.waitReplicas > 0 ? config.redis.waitTimeoutMs + WAIT_HOLD_MARGIN_MS : 0;
  return (config.webhooks.scheduleMs[0] ?? 0) + hold;
}

/** Margin over two blocking waits before an intake replica that shows no life is presumed dead. */
const INTAKE_LIVENESS_MARGIN_MS = 2_000;

/** How long an intake replica counts as alive: it shows life at least once per blocking wait. */
export function intakeLivenessMs(config: Config): number {
  return 2 * config.intake.idleMs + INTAKE_LIVENESS_MARGIN_MS;
}

function envValue(raw: string, kind: EnvKind): unknown {
  switch (kind) {
    case 'number': {
      const n = Number(raw.trim());
      return Number.isFinite(n) ? n : raw;
    }
    case 'boolean': {
      const v = raw.trim().toLowerCase();
      return v === 'true' || v === '1' || v === 'yes' ? true : v === 'false' || v === '0' || v === 'no' ? false : raw;
    }
    case 'list':
      return raw.split(',').map((s) => s.trim()).filter(Boolean);
    case 'secretList':
      return raw.split(/\s+/).filter(Boolean);
    default:
      return raw.trim();
  }
}

type Origin = { name: string; env?: boolean; raw?: string };

function originOf(origin: Map<string, Origin>, path: string[]) {
  // An issue deep in a list (webhooks.urls.2) belongs to the variable or file key that set it.
  for (let i = path.length; i > 0; i--) {
    const hit = origin.get(path.slice(0, i).join('.'));
    if (!hit) continue;
    if (i === path.length) return hit;
    const rest = path.slice(i).join('.');
    return { name: hit.env ? `${hit.name}[${rest}]` : `${hit.name}.${rest}` };
  }
  return undefined;
}

function mergeInto(target: Record<string, unknown>, source: Record<string, unknown>, prefix: string, mark: (path: string) => void): void {
  for (const [key, value] of Object.entries(source)) {
    const path = prefix ? `${prefix}.${key}` : key;
    const current = target[key];
    if (isPlainObject(value) && isPlainObject(current)) {
      mergeInto(current, value, path, mark);
    } else {
      target[key] = value;
      mark(path);
    }
  }
}

function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  let node = target;
  for (const key of keys.slice(0, -1)) {
    const next = node[key];
    if (!isPlainObject(next)) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[keys[keys.length - 1] as string] = value;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
