import { execFile } from 'node:child_process';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis as RedisClient, type Redis } from 'ioredis';
import { afterAll, afterEach, expect, inject } from 'vitest';
import type { Logger } from 'pino';
import { loadConfig, type Config } from '../../src/config.ts';
import { Daemon, type DaemonDeps } from '../../src/daemon.ts';
import { makeLogger } from '../../src/log.ts';
import type { WatchEvent } from '../../src/events/event.ts';
import { layoutFor, type Layout } from '../../src/redis/keys.ts';
import { defineScripts } from '../../src/redis/scripts.ts';
import type { StoreContext } from '../../src/redis/context.ts';
import { startSimulator, type Simulator, type SimulatorOptions } from '../../tools/simulator/server.ts';
import { startReceiver, type Receiver, type ReceiverOptions } from './receiver.ts';
import { useSeed, type Rng } from './seed.ts';
import { killAllDaemons, MAIN, ROOT } from './daemon-process.ts';
import { waitFor, type WaitOptions } from './wait.ts';

/**
 * Helpers shared by the integration and crash suites: a config with a private key prefix and a
 * fast cadence, readers for the daemon's Redis state, poll-until helpers (events, dead letters,
 * a settled schedule, a drained outbox), the daemon binary as a child process, the in-process
 * daemon, simulator, receiver and stand-in Letta API of a test, and cleanup of everything a test
 * started. `useSuite()` bundles the shared Redis, the cleanup and the suite's seeded randomness
 * (seed.ts); runs.ts creates runs in the simulator.
 */

export { ROOT, spawnDaemon, killAllDaemons, type SpawnedDaemon } from './daemon-process.ts';
export { waitFor, type WaitOptions } from './wait.ts';

// ---------------------------------------------------------------------------------------------
// Cleanup

type Release = () => Promise<unknown> | unknown;

/** Things to undo after a test, released in reverse order; one failure does not stop the rest. */
export class Cleanup {
  #stack: Release[] = [];

  add(fn: Release): void {
    this.#stack.push(fn);
  }

  async run(): Promise<void> {
    let first: unknown;
    while (this.#stack.length > 0) {
      const fn = this.#stack.pop() as Release;
      try {
        await fn();
      } catch (err) {
        first ??= err;
      }
    }
    if (first !== undefined) throw first;
  }
}

/** Deletes every key under `prefix:` and `{prefix:` (SCAN + DEL, never KEYS). */
export async function deletePrefix(redis: Redis, prefix: string): Promise<number> {
  let deleted = 0;
  for (const pattern of [`${globEscape(prefix)}:*`, `{${globEscape(prefix)}:*`]) {
    let cursor = '0';
    do {
      const [next, found] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      for (const key of found) deleted += await redis.del(key);
    } while (cursor !== '0');
  }
  return deleted;
}

function globEscape(s: string): string {
  return s.replace(/[*?[\]\\]/g, '\\$&');
}

const prefixesInUse = new Set<string>();

/** A fresh key prefix (`t-<random>`), remembered so `deleteTestKeys` can remove its keys. */
export function newPrefix(): string {
  const prefix = `t-${randomBytes(6).toString('hex')}`;
  prefixesInUse.add(prefix);
  return prefix;
}

/** Deletes the keys of every prefix handed out so far (call it in afterEach). */
export async function deleteTestKeys(redis: Redis): Promise<void> {
  for (const prefix of [...prefixesInUse]) {
    await deletePrefix(redis, prefix);
    prefixesInUse.delete(prefix);
  }
}

// ---------------------------------------------------------------------------------------------
// Configuration

export type EnvOverrides = Record<string, string | undefined>;

/**
 * The environment of a test daemon: shared Redis, private prefix, fast cadence, no HTTP server,
 * silent logs, no reconciliation with the list of active runs (most suites count or fault
 * the requests for single runs; the detection and chaos suites turn it on) and no run.stalled
 * (the alerting suite turns it on). `overrides` win; `undefined` removes a variable.
 */
export function testEnv(overrides: EnvOverrides = {}): Record<string, string> {
  const env: Record<string, string | undefined> = {
    REDIS_URL: inject('redisUrl'),
    WATCHER_KEY_PREFIX: newPrefix(),
    WATCHER_POLL_INITIAL_MS: '50',
    WATCHER_POLL_MAX_MS: '200',
    WATCHER_RECONCILE_MS: '0',
    // Fixtures often date their runs long ago: no stall reports unless a suite asks.
    WATCHER_STALLED_AFTER_MS: '0',
    WATCHER_HTTP_PORT: '0',
    WATCHER_LOG_LEVEL: 'silent',
    ...overrides,
  };
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v;
  return out;
}

/** A Config as the daemon would load it from `testEnv(overrides)`. */
export function testConfig(overrides: EnvOverrides = {}): Config {
  return loadConfig({ env: testEnv(overrides) });
}

/**
 * WATCHER_CONFIG contents for a short lease, so runs held by a killed process come due again
 * within about a second. The config requires the lease to exceed a poll's worst case
 * (timeout × attempts + backoff), so the Letta client's timeouts shrink with it; the local
 * simulator answers in a millisecond or two.
 */
export function shortLease(leaseMs = 1000): Record<string, unknown> {
  return {
    poll: { leaseMs },
    letta: { requestTimeoutMs: 250, retries: 1, retryMinMs: 20, retryMaxMs: 100, retryAfterCapMs: 200 },
  };
}

const tempDirs: string[] = [];

/** Writes a WATCHER_CONFIG file and returns its path (removed by `removeTempFiles`). */
export function configFile(contents: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), 'lrw-config-'));
  tempDirs.push(dir);
  const path = join(dir, 'watcher.json');
  writeFileSync(path, JSON.stringify(contents));
  return path;
}

export function removeTempFiles(): void {
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------
// Reading the daemon's state

export interface StreamEvent {
  streamId: string;
  event: WatchEvent;
}

/** Every entry of `P:events`, parsed, in stream order. */
export async function readEvents(redis: Redis, prefix: string): Promise<StreamEvent[]> {
  const out: StreamEvent[] = [];
  let start = '-';
  for (;;) {
    const page = await redis.xrange(keys(prefix).events, start, '+', 'COUNT', 1000);
    for (const [streamId, fields] of page) {
      const i = fields.indexOf('event');
      const raw = i >= 0 && i % 2 === 0 ? fields[i + 1] : undefined;
      if (raw === undefined) throw new Error(`stream entry ${streamId} has no "event" field: ${JSON.stringify(fields)}`);
      out.push({ streamId, event: JSON.parse(raw) as WatchEvent });
    }
    if (page.length < 1000) return out;
    start = `(${page[page.length - 1]?.[0] ?? ''}`;
  }
}

/** Number of events per run id. */
export function countByRun(events: readonly StreamEvent[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const { event } of events) counts.set(event.data.run_id, (counts.get(event.data.run_id) ?? 0) + 1);
  return counts;
}

export interface Tally {
  /** Runs expected but without any event. */
  missing: string[];
  /** Runs with more than one event. */
  duplicated: string[];
  /** Events for runs nobody asked about. */
  unexpected: string[];
  /** Events in the stream. */
  total: number;
}

/**
 * Exactly one event per run: none missing, duplicated or unexpected (lists cut at 10). With
 * `outcomes` (the simulator's runs), each event's type must also match the run's outcome.
 */
export function expectExactlyOnce(
  events: readonly StreamEvent[],
  runIds: Iterable<string>,
  outcomes?: ReadonlyMap<string, { outcome: string }>,
): void {
  const t = tally(events, runIds);
  const few = (ids: string[]) => (ids.length > 10 ? [...ids.slice(0, 10), `…and ${ids.length - 10} more`] : ids);
  expect({ missing: few(t.missing), duplicated: few(t.duplicated), unexpected: few(t.unexpected) }).toEqual({
    missing: [],
    duplicated: [],
    unexpected: [],
  });
  if (outcomes) for (const { event } of events) expect(event.type).toBe(`run.${outcomes.get(event.data.run_id)?.outcome}`);
}

/** Compares the stream with the runs that were enqueued. */
export function tally(events: readonly StreamEvent[], runIds: Iterable<string>): Tally {
  const counts = countByRun(events);
  const expected = new Set(runIds);
  const missing: string[] = [];
  const duplicated: string[] = [];
  for (const id of expected) {
    const n = counts.get(id) ?? 0;
    if (n === 0) missing.push(id);
    else if (n > 1) duplicated.push(id);
  }
  const unexpected = [...counts.keys()].filter((id) => !expected.has(id));
  return { missing, duplicated, unexpected, total: events.length };
}

export interface DeadLetter {
  kind: string;
  reason: string;
  at: string;
  entry: string;
  [key: string]: unknown;
}

export async function readDead(redis: Redis, prefix: string): Promise<DeadLetter[]> {
  const raw = await redis.lrange(keys(prefix).dead, 0, -1);
  return raw.map((r) => JSON.parse(r) as DeadLetter);
}

/** Redis's own clock in ms (the schedule's scores are in it). */
export async function redisNow(redis: Redis): Promise<number> {
  const [s, us] = await redis.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

/** The keys of a one-partition layout under `prefix` (partition 0's, flattened), and the layout. */
export function keys(prefix: string, partitions = 1) {
  const layout: Layout = layoutFor(prefix, partitions);
  const p = layout.partitions[0];
  if (!p) throw new Error('no partition 0');
  return { layout, intake: layout.intake, meta: layout.meta, ...p };
}

/** Pushes intake entries the way a producer does (LPUSH), in chunks. */
export async function enqueue(redis: Redis, prefix: string, entries: readonly string[]): Promise<void> {
  for (let i = 0; i < entries.length; i += 500) {
    await redis.lpush(keys(prefix).intake, ...entries.slice(i, i + 500));
  }
}

// ---------------------------------------------------------------------------------------------
// Waiting on observable state

/**
 * Waits until `read()` gives at least `n` items and returns them. A timeout says how many there
 * were (`what` names them), then what `options.describe` adds.
 */
export async function waitForCount<T>(read: () => Promise<T[]>, n: number, what: string, options: WaitOptions = {}): Promise<T[]> {
  let last: T[] = [];
  const { describe, ...rest } = options;
  return await waitFor(
    async () => {
      last = await read();
      return last.length >= n ? last : undefined;
    },
    { ...rest, describe: async () => `${last.length} of ${n} ${what}${describe ? `\n${await describe()}` : ''}` },
  );
}

/** Waits until P:dead holds at least `n` dead letters and returns them (newest first). */
export async function waitForDead(redis: Redis, prefix: string, n: number, options: WaitOptions = {}): Promise<DeadLetter[]> {
  return await waitForCount(() => readDead(redis, prefix), n, 'dead letters', options);
}

/**
 * Waits until the stream holds `expected` events and nothing is left to watch (schedule and
 * intake empty), then reads the stream once more: what a test asserts exactly-once on.
 */
export async function settledEvents(redis: Redis, prefix: string, expected: number, options: WaitOptions = {}): Promise<StreamEvent[]> {
  const k = keys(prefix);
  const { timeoutMs = 20_000 } = options;
  await waitForEvents(redis, prefix, expected, { ...options, timeoutMs });
  await waitFor(async () => (await redis.zcard(k.due)) === 0 && (await redis.llen(k.intake)) === 0, {
    timeoutMs,
    describe: async () => `schedule ${await redis.zcard(k.due)}, intake ${await redis.llen(k.intake)}${options.describe ? `\n${await options.describe()}` : ''}`,
  });
  return await readEvents(redis, prefix);
}

/** Waits until no delivery is left in the outbox (every one delivered or dead-lettered). */
export async function outboxDrained(redis: Redis, prefix: string, timeoutMs = 15_000): Promise<void> {
  const k = keys(prefix);
  await waitFor(async () => (await redis.zcard(k.webhooks)) === 0, {
    timeoutMs,
    describe: async () => `${await redis.zcard(k.webhooks)} deliveries left in ${k.webhooks}`,
  });
}

/** Waits until the stream holds at least `n` events and returns them. */
export async function waitForEvents(redis: Redis, prefix: string, n: number, options: WaitOptions = {}): Promise<StreamEvent[]> {
  return await waitForCount(() => readEvents(redis, prefix), n, 'events', options);
}

// ---------------------------------------------------------------------------------------------
// A suite's shared parts

export interface Suite {
  /** A client of the shared Redis. */
  redis: Redis;
  /** What the current test started, undone after it. */
  cleanup: Cleanup;
  /** The suite's seeded randomness (the seed is printed once; LRW_SEED=<seed> repeats it). */
  rng: Rng;
  /** A simulator on a free port, closed after the test; its dice are a stream of `rng`. */
  simulator(options?: SimulatorOptions): Promise<Simulator>;
  /** A receiver on a free port, closed after the test. */
  receiver(options: ReceiverOptions): Promise<Receiver>;
}

/**
 * The shared Redis client, cleanup and seeded randomness of a suite: after each test, stop any
 * daemon it spawned, run its cleanups, delete its keys and temp files; after all, close the
 * client. `seedEnv` names a variable read before LRW_SEED for the seed.
 */
export function useSuite(options: { seedEnv?: string } = {}): Suite {
  const redis = new RedisClient(inject('redisUrl'));
  const cleanup = new Cleanup();
  const rng = useSeed(options.seedEnv === undefined ? {} : { env: options.seedEnv });
  afterEach(async () => {
    try {
      await killAllDaemons();
      await cleanup.run();
    } finally {
      await deleteTestKeys(redis);
      removeTempFiles();
    }
  });
  afterAll(async () => {
    await redis.quit();
  });
  return {
    redis,
    cleanup,
    rng,
    simulator: (o = {}) => startSimulatorIn(cleanup, { random: rng.stream('simulator'), ...o }),
    receiver: (o) => startReceiverIn(cleanup, o),
  };
}

/** A simulator on a free port (unless `options.port` says), closed by `cleanup`. */
export async function startSimulatorIn(cleanup: Cleanup, options: SimulatorOptions = {}): Promise<Simulator> {
  const sim = await startSimulator({ port: 0, ...options });
  cleanup.add(() => sim.close());
  return sim;
}

/** A webhook receiver on 127.0.0.1, closed by `cleanup`. */
export async function startReceiverIn(cleanup: Cleanup, options: ReceiverOptions): Promise<Receiver> {
  const rx = await startReceiver(options);
  cleanup.add(() => rx.close());
  return rx;
}

// ---------------------------------------------------------------------------------------------
// The CLI and the in-process daemon

/** `node src/main.ts ...args` with only `env` (plus PATH); its exit code and what it printed. */
export function runCli(args: string[], env: Record<string, string>, timeoutMs = 20_000): Promise<{ code: number; stdout: string; stderr: string; out: string }> {
  return new Promise((resolvePromise) => {
    execFile(process.execPath, [MAIN, ...args], { cwd: ROOT, env: { PATH: process.env['PATH'] ?? '', ...env }, timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1;
      resolvePromise({ code, stdout, stderr, out: `${stdout}${stderr}` });
    });
  });
}

/** A pino logger that keeps every line, parsed, for the test to read. */
export function captureLogger(level = 'info'): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = makeLogger(level, { destination: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } });
  return { log, lines };
}

/** Starts a Daemon in this process; it is stopped by `cleanup`. */
export async function startDaemon(cleanup: Cleanup, config: Config, extra: Partial<DaemonDeps> = {}): Promise<Daemon> {
  const daemon = new Daemon({ config, log: makeLogger('silent'), ...extra });
  cleanup.add(() => daemon.stop());
  await daemon.start();
  return daemon;
}

/** The store over the shared client for `prefix` (the CLI's and the daemon's view of it). */
export function storeFor(redis: Redis, prefix: string, partitions = 1): StoreContext {
  return { client: redis, scripts: defineScripts(redis), layout: layoutFor(prefix, partitions), replica: `test-${process.pid}` };
}

/**
 * Answers GET /v1/health/ as Letta does, so a test's stand-in API passes the daemon's check
 * that its base URL is a Letta API. True when the request was that one.
 */
export function answeredHealth(req: IncomingMessage, res: ServerResponse): boolean {
  if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/v1/health/') return false;
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end('{"version":"test","status":"ok"}');
  return true;
}

export interface StandInApi {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
}

/**
 * A stand-in for the Letta API on 127.0.0.1 (closed by `cleanup`): `handle` answers every
 * request but GET /v1/health/, which is answered as Letta does (`answeredHealth`) unless
 * `health` is false (a server that is not a Letta API).
 */
export async function startApiIn(
  cleanup: Cleanup,
  handle: (req: IncomingMessage, res: ServerResponse) => void,
  options: { health?: boolean } = {},
): Promise<StandInApi> {
  const health = options.health ?? true;
  const server = createServer((req, res) => {
    if (health && answeredHealth(req, res)) return;
    handle(req, res);
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanup.add(
    () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  );
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, port };
}

/** A metric's value from a registry (the sum over label sets matching `labels`, e.g. 'type="run.failed"'). */
export async function metric(registry: { getSingleMetricAsString(name: string): Promise<string> }, name: string, labels = ''): Promise<number> {
  const text = await registry.getSingleMetricAsString(name);
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line.startsWith(name) || !line.includes(labels)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}
