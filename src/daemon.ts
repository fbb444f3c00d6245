import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import { makeApiBudget } from './polling/api-budget.ts';
import { makeApiGate, type ApiGate } from './polling/api-gate.ts';
import { makeCallbackReceiver, type CallbackReceiver } from './polling/callbacks.ts';
import { systemClock, type Clock } from './clock.ts';
import { firstDeliveryDelayMs, intakeLimits, intakeLivenessMs, type Config } from './config.ts';
import { DaemonError, isDaemonError } from './errors.ts';
import { startHttpServer } from './ops/http.ts';
import { makeIntakeLoop, type IntakeLoop } from './intake/loop.ts';
import { makeLettaClient, type LettaClient } from './letta/client.ts';
import { apiErrorClass, makeMetrics, showApiGate, type Metrics } from './ops/metrics.ts';
import { makePoller, type Poller } from './polling/poller.ts';
import { makeReconciler, type Reconciler } from './polling/reconcile.ts';
import { closeRedis, connectRedis, dropRedis, redisWarnings } from './redis/connection.ts';
import { classifyRedisError, makeRedisHealth, type RedisHealth } from './redis/health.ts';
import { layoutFor } from './redis/keys.ts';
import { defineScripts, type RedisClient } from './redis/scripts.ts';
import { redactUrl } from './redact.ts';
import type { WatchEvent } from './events/event.ts';
import { logEvent } from './events/log.ts';
import { makeStreamTrimmer, type StreamTrimmer } from './events/stream-trim.ts';
import type { StoreContext } from './redis/context.ts';
import { makeEndpointHealth } from './webhooks/endpoint-health.ts';
import { makeIntakeStore } from './intake/store.ts';
import { checkLayout, startLegacyMigration } from './redis/migrate.ts';
import { makeOutbox, type Outbox } from './webhooks/outbox.ts';
import { probeRedis } from './redis/probe.ts';
import { makeRunStore, type RunStore } from './polling/runs.ts';
import { readStatus, type Status } from './ops/status.ts';
import { makeUrlGuard, type Resolver, type UrlGuard } from './webhooks/url-guard.ts';
import { makeDeliveryWorker } from './webhooks/delivery.ts';
import { loadFormats } from './webhooks/format.ts';
import { configuredTargets, makeRouter, type Router } from './webhooks/targets.ts';
import type { WorkLoop } from './engine/work-loop.ts';

/**
 * The daemon's lifecycle, logged at every change:
 *   starting  connecting, checking the layout, starting the loops
 *   running   the loops run
 *   draining  stop() was called: no new claims, in-flight work finishes or is handed back
 *   stopped   everything released
 *   failed    start() or stop() hit an error (the first one is rethrown)
 */
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
/** How long /readyz waits for each Redis probe. */
const PROBE_TIMEOUT_MS = 1_000;
/** Between attempts to reach Redis while starting. */
const START_RETRY_MS = 1_000;

/** `work`, or a rejection as soon as `signal` aborts (the work itself is left to settle). */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new DaemonError('ERR_STOPPED', 'stopped during start-up'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new DaemonError('ERR_STOPPED', 'stopped during start-up'));
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/**
 * The composition root: builds every part from the config, wires the stages in the order a
 * run goes through them (intake, polling, commit, stream and webhooks), and runs the
 * lifecycle. Stop is idempotent and releases in reverse order of start.
 */
export class Daemon {
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly replica = randomUUID();
  #state: DaemonState = 'starting';
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #redis: RedisClient | undefined;
  #blocking: RedisClient | undefined;
  #ctx: StoreContext | undefined;
  #health: RedisHealth | undefined;
  #gate: ApiGate | undefined;
  #client: LettaClient | undefined;
  #poller: Poller | undefined;
  #intake: IntakeLoop | undefined;
  #deliveries: WorkLoop | undefined;
  #trimmer: StreamTrimmer | undefined;
  #reconciler: Reconciler | undefined;
  #callbacks: CallbackReceiver | undefined;
  #guard: UrlGuard | undefined;
  #legacy: { stop(): void } | undefined;
  #http: { port: number; close(): Promise<void> } | undefined;
  readonly #deps: DaemonDeps;
  readonly #clock: Clock;
  readonly #startAbort = new AbortController();

  constructor(deps: DaemonDeps) {
    this.#deps = deps;
    this.#clock = deps.clock ?? systemClock;
    this.log = deps.log;
    this.metrics = makeMetrics(
      () => this.#gauges(),
      (err) => this.#health?.report('metrics', err),
    );
  }

  get state(): DaemonState {
    return this.#state;
  }

  #setState(next: DaemonState): void {
    this.log.info({ from: this.#state, to: next }, `daemon ${next}`);
    this.#state = next;
  }

  /**
   * Starts everything; resolves once the loops run. A stop() meanwhile ends start-up early
   * (start() then rejects with ERR_STOPPED): a daemon that waits for Redis can still be
   * stopped. Any other failure leaves the daemon `failed`, with everything released.
   */
  start(): Promise<void> {
    this.#starting ??= (async () => {
      try {
        await this.#start();
        this.#setState('running');
      } catch (err) {
        if (this.#stopping) throw new DaemonError('ERR_STOPPED', 'stopped during start-up', { cause: err });
        this.#setState('failed');
        await this.#release().catch(() => {});
        throw err;
      }
    })();
    return this.#starting;
  }

  /** Throws once stop() has been called: start-up goes no further. */
  #checkNotStopping(): void {
    if (this.#stopping) throw new DaemonError('ERR_STOPPED', 'stopped during start-up');
  }

  /**
   * The stages, wired in the order a run goes through them: Redis first (everything lives
   * there), the Letta side (gate, fleet budget, client), the webhooks and the event sinks a
   * commit feeds, the poller that commits, the detection that hurries it, and the intake last,
   * so nothing is taken in before there is somewhere for it to go.
   */
  async #start(): Promise<void> {
    const { config } = this.#deps;
    // Health and readiness answer from the start: "starting", and why (Redis not reachable...).
    if (config.http.port !== 0) this.#http = await startHttpServer(config.http.host, config.http.port, this, this.log.child({ module: 'http' }));
    const { ctx, health } = await this.#connectRedis();
    const letta = this.#lettaSide(ctx, health);
    const webhooks = await this.#webhooks(ctx, health);
    const onEvent = this.#eventSinks(ctx, health, webhooks);
    const { poller, runs } = this.#polling(ctx, health, letta, webhooks, onEvent);
    this.#detection(ctx, health, letta, poller, runs);
    const intake = this.#intakeStage(ctx, health, poller);
    this.#checkNotStopping();
    poller.start();
    intake.start();
    webhooks.worker.start();
    this.#reconciler?.start();
  }

  /** Connections (commands, and the blocking intake wait), the layout check, and what 0.1 left. */
  async #connectRedis(): Promise<{ ctx: StoreContext; health: RedisHealth }> {
    const { config } = this.#deps;
    const redisLog = this.log.child({ module: 'redis' });
    const redis = connectRedis(config, { kind: 'daemon' }, 'letta-run-watcher', redisLog);
    this.#redis = redis;
    this.#blocking = connectRedis(config, { kind: 'blocking', blockMs: config.intake.idleMs }, 'letta-run-watcher-intake', redisLog);
    const ctx: StoreContext = { client: redis, scripts: defineScripts(redis), layout: layoutFor(config.redis.keyPrefix, config.redis.partitions), replica: this.replica };
    this.#ctx = ctx;
    const health = makeRedisHealth(redisLog, (cause) => this.metrics.redisErrors.inc({ cause }));
    this.#health = health;

    await this.#untilRedisAnswers(() => checkLayout(ctx), health);
    this.#checkNotStopping();
    for (const w of await redisWarnings(redis)) this.log.warn(w);
    this.#legacy = await startLegacyMigration(ctx, { log: this.log, health });
    this.#checkNotStopping();
    return { ctx, health };
  }

  /** Whether polls may go (the gate), the fleet's API budget, and the client that makes them. */
  #lettaSide(ctx: StoreContext, health: RedisHealth): { gate: ApiGate; client: LettaClient } {
    const { config } = this.#deps;
    const log = this.log.child({ module: 'letta' });
    const gate = makeApiGate({ clock: this.#clock, probeEveryMs: config.letta.authPauseMs, log, baseUrl: redactUrl(config.letta.baseUrl), onChange: (state) => showApiGate(this.metrics, state) });
    this.#gate = gate;
    const budget =
      config.poll.apiRps > 0
        ? makeApiBudget({ ctx, maxRps: config.poll.apiRps, clock: this.#clock, log, health, onRate: (rps) => this.metrics.apiBudget.set(rps) })
        : undefined;
    const client = makeLettaClient({
      ...config.letta,
      apiKey: config.secrets.lettaApiKey,
      clock: this.#clock,
      connections: config.poll.concurrency,
      ...(budget ? { beforeRequest: (signal: AbortSignal) => budget.acquire(signal), onRateLimited: (ms: number | undefined) => budget.throttled(ms) } : {}),
      onAttemptError: (err) => this.metrics.apiErrors.inc({ class: apiErrorClass(err) }),
      ...(this.#deps.dispatcher ? { dispatcher: this.#deps.dispatcher } : {}),
    });
    this.#client = client;
    // Does the base URL answer like a Letta API? Not awaited: a Letta that is slow to answer
    // must not hold up start-up, and a poll finds a wrong URL as well.
    void client.checkHealth(this.#startAbort.signal).then((verdict) => {
      if (verdict.kind === 'not_letta') gate.pause('not-letta', verdict.detail);
      else if (verdict.kind === 'auth') gate.pause('credentials', `GET /v1/health/ answered ${verdict.status}`);
    });
    return { gate, client };
  }

  /** The outbox, who gets which event (decided at commit), endpoint health, and the delivery worker. */
  async #webhooks(ctx: StoreContext, health: RedisHealth): Promise<{ outbox: Outbox; router: Router; worker: WorkLoop }> {
    const { config } = this.#deps;
    // A recovered endpoint's waiting deliveries were released: claim them now.
    const outbox = makeOutbox(ctx, () => this.#deliveries?.wake());
    this.#guard = makeUrlGuard({
      allowedHosts: config.webhooks.allowedHosts,
      allowPrivateAddresses: config.webhooks.allowPrivateAddresses,
      ...(this.#deps.resolve ? { resolve: this.#deps.resolve } : {}),
    });
    const formats = await loadFormats();
    const targets = configuredTargets(config, formats);
    const router = makeRouter(targets, formats);
    const endpoints = makeEndpointHealth(ctx, {
      failingAfter: config.webhooks.failingAfter,
      gapMs: config.webhooks.opsEventGapMs,
      firstDeliveryMs: firstDeliveryDelayMs(config),
      subscribers: router.opsSubscribers(),
    });
    const worker = makeDeliveryWorker({
      outbox,
      partitions: config.redis.partitions,
      health,
      config: config.webhooks,
      secrets: config.secrets.webhookSecrets,
      guard: this.#guard,
      targets,
      formats,
      endpoints,
      ...(this.#deps.webhookDispatcher ? { dispatcher: this.#deps.webhookDispatcher } : {}),
      clock: this.#clock,
      log: this.log.child({ module: 'webhooks' }),
      metrics: this.metrics,
      ...(this.#deps.random ? { random: this.#deps.random } : {}),
    });
    this.#deliveries = worker;
    return { outbox, router, worker };
  }

  /** What a committed event sets off: its log line, the stream's trimming, the deliveries' wake-up. */
  #eventSinks(ctx: StoreContext, health: RedisHealth, webhooks: { worker: WorkLoop }): (event: WatchEvent, partition: number) => void {
    const { config } = this.#deps;
    const log = this.log.child({ module: 'events' });
    const trimmer = makeStreamTrimmer({
      ctx,
      maxLen: config.events.streamMaxLen,
      hardMaxLen: config.events.streamHardMaxLen,
      everyMs: config.events.trimEveryMs,
      log,
      metrics: this.metrics,
      health,
    });
    this.#trimmer = trimmer;
    return (event, partition) => {
      logEvent(log, event);
      trimmer.committed(partition);
      webhooks.worker.wake();
    };
  }

  /** The watch state and the poller, which commits each run's event and its deliveries. */
  #polling(
    ctx: StoreContext,
    health: RedisHealth,
    letta: { gate: ApiGate; client: LettaClient },
    webhooks: { outbox: Outbox; router: Router },
    onEvent: (event: WatchEvent, partition: number) => void,
  ): { poller: Poller; runs: RunStore } {
    const { config } = this.#deps;
    const log = this.log.child({ module: 'poller' });
    const { outbox, router } = webhooks;
    // With WAIT, a commit's deliveries are held until replicas confirm it (polling/runs.ts).
    const durability =
      config.redis.waitReplicas > 0
        ? {
            waitReplicas: config.redis.waitReplicas,
            waitTimeoutMs: config.redis.waitTimeoutMs,
            release: (p: number, members: readonly string[]) => outbox.release(p, members),
            unconfirmed: (acked: number) =>
              log.warn({ acked, wanted: config.redis.waitReplicas }, 'a commit was not confirmed by enough Redis replicas in time; its webhooks wait for the hold to end'),
          }
        : undefined;
    const runs = makeRunStore(ctx, durability);
    const poller = makePoller({
      runs,
      partitions: config.redis.partitions,
      client: letta.client,
      gate: letta.gate,
      clock: this.#clock,
      log,
      metrics: this.metrics,
      health,
      options: { ...config.poll, probeEveryMs: config.letta.authPauseMs, firstDeliveryMs: firstDeliveryDelayMs(config) },
      ...(this.#deps.random ? { random: this.#deps.random } : {}),
      targetsFor: router.targetsFor,
      onEvent,
    });
    this.#poller = poller;
    return { poller, runs };
  }

  /** What tells within seconds: reconciliation with Letta's list of active runs, and Letta's callback as a hint. */
  #detection(ctx: StoreContext, health: RedisHealth, letta: { gate: ApiGate; client: LettaClient }, poller: Poller, runs: RunStore): void {
    const { config } = this.#deps;
    if (config.poll.reconcileEveryMs > 0) {
      this.#reconciler = makeReconciler({
        client: letta.client,
        runs,
        ctx,
        everyMs: config.poll.reconcileEveryMs,
        safetyGapMs: config.poll.safetyGapMs,
        listLimit: config.letta.listLimit,
        gate: letta.gate,
        clock: this.#clock,
        log: this.log.child({ module: 'reconcile' }),
        metrics: this.metrics,
        health,
        watching: () => poller.watching,
        onDue: (p) => poller.dueNow(p),
      });
    }
    const token = config.secrets.callbackToken;
    if (token) this.#callbacks = makeCallbackReceiver({ token, ratePerSecond: config.callbacks.ratePerSecond, metrics: this.metrics, hint: (runId) => poller.hint(runId) });
  }

  /** The intake: entries move from P:intake into the watch state, and wake the poller. */
  #intakeStage(ctx: StoreContext, health: RedisHealth, poller: Poller): IntakeLoop {
    const { config } = this.#deps;
    const intake = makeIntakeLoop({
      store: makeIntakeStore(ctx, intakeLimits(config), { livenessMs: intakeLivenessMs(config) }),
      blocking: this.#blocking as RedisClient,
      batch: config.intake.batch,
      idleMs: config.intake.idleMs,
      clock: this.#clock,
      log: this.log.child({ module: 'intake' }),
      metrics: this.metrics,
      health,
      onAccepted: () => poller.wake(),
    });
    this.#intake = intake;
    return intake;
  }

  /** Retries `fn` while Redis cannot be reached (start-up waits for it); other errors end start-up. */
  async #untilRedisAnswers<T>(fn: () => Promise<T>, health: RedisHealth): Promise<T> {
    for (;;) {
      try {
        // Commands wait for a connection (up to their timeout); a stop should not.
        const v = await untilAborted(fn(), this.#startAbort.signal);
        health.recovered('start-up');
        return v;
      } catch (err) {
        if (isDaemonError(err)) throw err;
        const { cause } = classifyRedisError(err);
        if (cause === 'other' || cause === 'wrong_type') throw err;
        health.report('start-up', err);
        this.#checkNotStopping();
        await this.#clock.sleep(START_RETRY_MS, this.#startAbort.signal).catch(() => {});
        this.#checkNotStopping();
      }
    }
  }

  /** Stop claiming, drain within the grace period, hand back what is left, close. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      if (this.#state === 'running' || this.#state === 'starting') this.#setState('draining');
      // Let start-up see the stop and finish what it was doing, so nothing it starts outlives us.
      this.#startAbort.abort();
      await this.#starting?.catch(() => {});
      const firstError = await this.#release();
      this.#setState(firstError === undefined ? 'stopped' : 'failed');
      if (firstError !== undefined) throw firstError;
    })();
    return this.#stopping;
  }

  /** Releases in reverse order of start; returns the first error (each is logged). */
  async #release(): Promise<unknown> {
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
    this.#startAbort.abort();
    this.#legacy?.stop();
    await release('intake loop', () => this.#intake?.stop());
    await release('reconciliation', () => this.#reconciler?.stop());
    await Promise.all([
      release('poller', () => this.#poller?.stop(grace)),
      release('webhook deliveries', () => this.#deliveries?.stop(grace)),
    ]);
    await release('stream trimming', () => this.#trimmer?.stop());
    await release('Letta client', () => this.#client?.close());
    await release('webhook guard', () => this.#guard?.close());
    await release('HTTP server', () => this.#http?.close());
    await release('Redis connection', async () => {
      if (this.#blocking) dropRedis(this.#blocking);
      if (this.#redis) await closeRedis(this.#redis);
    });
    return firstError;
  }

  get registry() {
    return this.metrics.registry;
  }

  /** POST /callbacks/letta, once running with WATCHER_CALLBACK_TOKEN set. */
  get callbacks(): CallbackReceiver | undefined {
    return this.#callbacks;
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

  /** Why the daemon is not ready (empty when it is): its state, the Letta API, Redis's write path. */
  async notReady(): Promise<string[]> {
    const reasons: string[] = [];
    if (this.#state !== 'running') reasons.push(`daemon is ${this.#state}`);
    const api = this.#gate?.notReadyReason;
    if (api) reasons.push(api);
    const ctx = this.#ctx;
    // Not connected: say so at once rather than wait out the probe's timeout.
    if (!ctx || ctx.client.status !== 'ready') return [...reasons, 'Redis is not connected'];
    const problems = await probeRedis(ctx, PROBE_TIMEOUT_MS, (err) => {
      const problem = classifyRedisError(err);
      this.metrics.redisErrors.inc({ cause: problem.cause });
      return problem.message;
    });
    return [...reasons, ...problems];
  }

  async status(): Promise<Status> {
    if (!this.#ctx) throw new Error('daemon not started');
    return await readStatus(this.#ctx);
  }

  async #gauges() {
    const s = await this.status();
    return { watched: s.watched, due: s.due_now, backlog: s.webhook_backlog, dead: s.dead_letters, intake: s.intake, endpointsFailing: s.endpoints_failing };
  }
}
