import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import { makeBatcher } from './batcher.ts';
import { systemClock, type Clock } from './clock.ts';
import type { Config } from './config.ts';
import { makeIntakeLoop, type IntakeLoop } from './intake.ts';
import { makeLettaClient, type LettaClient } from './letta-client.ts';
import { makeMetrics, type Metrics } from './metrics.ts';
import { makePoller, type Poller } from './poller.ts';
import { connectRedis, redisWarnings } from './redis.ts';
import { startHttpServer } from './http.ts';
import { makeOutbox } from './outbox.ts';
import { makeSchedule, type Schedule, type SettleOp } from './schedule.ts';
import { logEvent } from './sinks/log.ts';
import { configuredTargets, makeDeliveryWorker } from './sinks/webhook.ts';
import { readStatus, type Status } from './status.ts';
import { makeUrlGuard, type Resolver, type UrlGuard } from './webhook-guard.ts';
import type { WorkLoop } from './work-loop.ts';

export type DaemonState = 'starting' | 'running' | 'draining' | 'stopped' | 'failed';

export interface DaemonDeps {
  config: Config;
  log: Logger;
  clock?: Clock;
  /** Letta API transport; tests pass an undici MockAgent. */
  dispatcher?: Dispatcher;
  /** Transport for configured webhook targets (per-run targets go through the URL guard's). */
  webhookDispatcher?: Dispatcher;
  /** DNS for the per-run webhook URL guard; tests inject one. */
  resolve?: Resolver;
  random?: () => number;
}

/** A loop that has not turned for this long is stuck (its waits are bounded well below it). */
const STALL_MS = 30_000;

/**
 * The composition root: builds every part from the config and runs its lifecycle
 * (starting → running → draining → stopped, or failed). Stop is idempotent and releases in
 * reverse order of start.
 */
export class Daemon {
  readonly metrics: Metrics;
  readonly log: Logger;
  #state: DaemonState = 'starting';
  #stopping: Promise<void> | undefined;
  #redis: Redis | undefined;
  #schedule: Schedule | undefined;
  #client: LettaClient | undefined;
  #poller: Poller | undefined;
  #intake: IntakeLoop | undefined;
  #deliveries: WorkLoop | undefined;
  #guard: UrlGuard | undefined;
  #http: { port: number; close(): Promise<void> } | undefined;
  readonly #deps: DaemonDeps;
  readonly #clock: Clock;

  constructor(deps: DaemonDeps) {
    this.#deps = deps;
    this.#clock = deps.clock ?? systemClock;
    this.log = deps.log;
    this.metrics = makeMetrics(() => this.#gauges());
  }

  get state(): DaemonState {
    return this.#state;
  }

  #setState(next: DaemonState): void {
    this.log.info({ from: this.#state, to: next }, `daemon ${next}`);
    this.#state = next;
  }

  async start(): Promise<void> {
    const { config } = this.#deps;
    const log = this.log;
    const redis = connectRedis(config.redis.url, log.child({ module: 'redis' }), 'letta-run-watcher');
    this.#redis = redis;
    for (const w of await redisWarnings(redis)) log.warn(w);

    const schedule = makeSchedule(redis, config.redis.keyPrefix, config.events.streamMaxLen);
    this.#schedule = schedule;
    const globalTargets = configuredTargets(config.webhooks).map((t) => t.key);
    const firstDelivery = config.webhooks.scheduleMs[0] ?? 0;
    // At most one settle round trip per 5 ms under load (see makeBatcher).
    const settle = makeBatcher<SettleOp, boolean>((ops) => schedule.settle(ops, globalTargets, firstDelivery), 256, 5);
    const client = makeLettaClient({
      ...config.letta,
      apiKey: config.secrets.lettaApiKey,
      clock: this.#clock,
      connections: config.poll.concurrency,
      // The HTTP status for status errors, the error code for everything else (a 200 whose
      // body is too large or not a Run is not a "200" error).
      onAttemptError: (err) => this.metrics.apiErrors.inc({ class: err.code === 'ERR_API_STATUS' ? String(err.status) : err.code }),
      ...(this.#deps.dispatcher ? { dispatcher: this.#deps.dispatcher } : {}),
    });
    this.#client = client;
    const eventLog = log.child({ module: 'events' });
    this.#guard = makeUrlGuard({
      allowedHosts: config.webhooks.allowedHosts,
      allowPrivateAddresses: config.webhooks.allowPrivateAddresses,
      ...(this.#deps.resolve ? { resolve: this.#deps.resolve } : {}),
    });
    const deliveries = makeDeliveryWorker({
      outbox: makeOutbox(redis, config.redis.keyPrefix, schedule.keys),
      config: config.webhooks,
      secrets: config.secrets.webhookSecrets,
      guard: this.#guard,
      ...(this.#deps.webhookDispatcher ? { dispatcher: this.#deps.webhookDispatcher } : {}),
      clock: this.#clock,
      log: log.child({ module: 'webhooks' }),
      metrics: this.metrics,
      ...(this.#deps.random ? { random: this.#deps.random } : {}),
    });
    this.#deliveries = deliveries;
    const poller = makePoller({
      schedule,
      settle,
      client,
      clock: this.#clock,
      log: log.child({ module: 'poller' }),
      metrics: this.metrics,
      options: { ...config.poll, authPauseMs: config.letta.authPauseMs },
      ...(this.#deps.random ? { random: this.#deps.random } : {}),
      onEvent: (event) => {
        logEvent(eventLog, event);
        deliveries.wake();
      },
    });
    this.#poller = poller;
    this.#intake = makeIntakeLoop({
      schedule,
      limits: {
        batch: config.intake.batch,
        defaultMaxWatchMs: config.poll.maxWatchMs,
        maxEntryBytes: config.intake.maxEntryBytes,
        maxWatchCapMs: Math.max(config.poll.maxWatchMs, 30 * 24 * 3600 * 1000),
      },
      idleMs: config.intake.idleMs,
      clock: this.#clock,
      log: log.child({ module: 'intake' }),
      metrics: this.metrics,
      onAccepted: () => poller.wake(),
    });
    poller.start();
    this.#intake.start();
    deliveries.start();
    if (config.http.port !== 0) {
      this.#http = await startHttpServer(config.http.host, config.http.port, this, log.child({ module: 'http' }));
    }
    this.#setState('running');
  }

  /** Stop claiming, drain within the grace period, hand back what is left, close. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      if (this.#state === 'running' || this.#state === 'starting') this.#setState('draining');
      let firstError: unknown;
      const release = async (what: string, fn: () => Promise<unknown> | undefined) => {
        try {
          await fn();
        } catch (err) {
          firstError ??= err;
          this.log.error({ err }, `error while stopping the ${what}`);
        }
      };
      const grace = this.#deps.config.shutdownGraceMs;
      await release('intake loop', () => this.#intake?.stop());
      await Promise.all([
        release('poller', () => this.#poller?.stop(grace)),
        release('webhook deliveries', () => this.#deliveries?.stop(grace)),
      ]);
      await release('Letta client', () => this.#client?.close());
      await release('webhook guard', () => this.#guard?.close());
      await release('HTTP server', () => this.#http?.close());
      await release('Redis connection', () => this.#redis?.quit().catch(() => this.#redis?.disconnect()));
      this.#setState(firstError === undefined ? 'stopped' : 'failed');
      if (firstError !== undefined) throw firstError;
    })();
    return this.#stopping;
  }

  /** Port of the health server (useful when configured as 0 in tests). */
  get httpPort(): number | undefined {
    return this.#http?.port;
  }

  get registry() {
    return this.metrics.registry;
  }

  stalledLoops(): string[] {
    if (this.#state !== 'running') return [];
    const now = this.#clock.now();
    const loops: [string, number | undefined][] = [
      ['intake', this.#intake?.lastBeat],
      ['polls', this.#poller?.lastBeat],
      ['webhook deliveries', this.#deliveries?.lastBeat],
    ];
    const stalled = loops.filter(([, beat]) => beat !== undefined && now - beat > STALL_MS).map(([name]) => name);
    if (stalled.length > 0) this.metrics.loopStalls.inc();
    return stalled;
  }

  async notReady(): Promise<string[]> {
    const reasons: string[] = [];
    if (this.#state !== 'running') reasons.push(`daemon is ${this.#state}`);
    if (this.#poller?.authPaused) reasons.push('Letta API refuses our credentials (401/403)');
    const redis = this.#redis;
    if (!redis || redis.status !== 'ready') reasons.push('Redis is not connected');
    else {
      const ping = redis.ping();
      const answered = await Promise.race([ping.then(() => true, () => false), new Promise<boolean>((r) => setTimeout(r, 1000, false).unref())]);
      if (!answered) reasons.push('Redis does not answer');
    }
    return reasons;
  }

  async status(): Promise<Status> {
    if (!this.#redis || !this.#schedule) throw new Error('daemon not started');
    return await readStatus(this.#redis, this.#schedule.keys);
  }

  async #gauges() {
    const s = await this.status();
    return { watched: s.watched, due: s.due_now, backlog: s.webhook_backlog, dead: s.dead_letters, intake: s.intake };
  }
}
