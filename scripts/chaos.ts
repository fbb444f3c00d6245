#!/usr/bin/env node
/**
 * The chaos run: `node scripts/chaos.ts [--runs 2000] [--replicas 3] [--seconds 90] [--seed N]
 * [--redis-down-seconds 3] [--receiver-down-seconds 20]`.
 *
 * Runs go through several replicas of the real daemon (`node src/main.ts run`, child processes)
 * while everything around them misbehaves:
 *   - the Letta simulator answers 10 % 5xx, 5 % 429 with Retry-After, leaves 2 % of requests
 *     hanging, and sends 1 % malformed bodies (a wire tap in front of it counts what it sent);
 *   - the webhook receiver (two targets: event format and Letta's callback format) fails 30 %
 *     of first attempts and is down entirely for a while (a delivery that failed twice waits
 *     out 5 minutes unless a later success to its endpoint releases it, so failing retries on
 *     purpose could leave the last deliveries waiting past the drain; the outage still
 *     pushes deliveries back to 5 minutes, and catching up is what brings them);
 *   - a random replica is `kill -9`'d every few seconds and restarted;
 *   - the private redis-server (AOF on, appendfsync always) is restarted once mid-run.
 * At the end it prints the figures and checks them; the exit code is 1 when a check fails.
 * `runChaos` is the core, so a test can run a smaller variant.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { Redis } from 'ioredis';
import type { WatchEvent } from '../src/events/event.ts';
import { parseLettaTime } from '../src/letta/run-state.ts';
import { layoutFor } from '../src/redis/keys.ts';
import { startSimulator, type SimOutcome } from '../tools/simulator/server.ts';
import { newSecret, startReceiver, type Receiver, type ReceivedRequest } from '../test/kit/receiver.ts';
import { startRedisServer, type RedisServer } from '../test/kit/redis-server.ts';
import { seeded } from '../tools/simulator/prng.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const MAIN = join(ROOT, 'src/main.ts');
const RUN_PATH = /^\/v1\/runs\/[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
const OUTCOMES = ['completed', 'failed', 'cancelled'] as const satisfies readonly SimOutcome[];

// ---------------------------------------------------------------------------------------------
// Options and report

export interface ChaosOptions {
  runs: number;
  replicas: number;
  /** Length of the chaos phase (kills, outages); draining comes after it. */
  seconds: number;
  seed: number;
  /** Exactly this many kills, spread over the chaos phase; otherwise one every `killEveryMs`. */
  kills?: number;
  killEveryMs: readonly [number, number];
  /** Runs are enqueued in batches over this fraction of the chaos phase. */
  enqueueFraction: number;
  runDurationMs: readonly [number, number];
  faults: { errorRate: number; rateLimitRate: number; retryAfterSeconds: number; hangRate: number; malformedRate: number };
  receiverFailRate: number;
  receiverDownMs: number;
  /** When the receiver goes down, as a fraction of the chaos phase. */
  receiverDownAt: number;
  redisDownMs: number;
  /** When Redis restarts, as a fraction of the chaos phase. */
  redisRestartAt: number;
  leaseMs: number;
  /** How long to wait, after the chaos phase, for every event and delivery. */
  drainTimeoutMs: number;
  logLevel: string;
  /** Progress lines (default: stderr). */
  log: (line: string) => void;
}

export const FULL_CHAOS: ChaosOptions = {
  runs: 2000,
  replicas: 3,
  seconds: 90,
  seed: 1,
  killEveryMs: [2000, 5000],
  enqueueFraction: 0.6,
  runDurationMs: [300, 15_000],
  faults: { errorRate: 0.1, rateLimitRate: 0.05, retryAfterSeconds: 1, hangRate: 0.02, malformedRate: 0.01 },
  receiverFailRate: 0.3,
  receiverDownMs: 20_000,
  receiverDownAt: 0.3,
  redisDownMs: 3000,
  redisRestartAt: 0.55,
  leaseMs: 8000,
  drainTimeoutMs: 180_000,
  logLevel: 'debug',
  log: (line) => process.stderr.write(`${line}\n`),
};

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface ChaosReport {
  seed: number;
  elapsedMs: number;
  runs: number;
  replicas: number;
  /** API requests that reached the simulator, and its answers by status ("hung" = never answered). */
  apiRequests: number;
  simulatorByStatus: Record<string, number>;
  /** Faults injected, by kind: 5xx and 429 and hung from simulator stats, malformed from the wire tap. */
  faults: { serverErrors: number; rateLimited: number; hung: number; malformed: number };
  /** API requests whose path was not /v1/runs/{valid id} (nor Letta's /v1/health/ or the list). */
  badApiPaths: number;
  kills: number;
  redisRestarts: number;
  receiverOutageMs: number;
  /** p99 of the lag from a run's end to its event. */
  lagP99Ms: number;
  /** The longest a webhook took after the receiver came back (or after its event, if later). */
  catchUpMs: number;
  events: number;
  duplicatesInStream: number;
  missingEvents: number;
  unexpectedEvents: number;
  wrongEventTypes: number;
  webhook: {
    targets: string[];
    /** Every request that reached the receiver (all targets). */
    received: number;
    /** Requests answered 2xx / failed on purpose. */
    answered2xx: number;
    failedOnPurpose: number;
    /** Distinct webhook-ids per target, and over all targets. */
    distinctIdsByTarget: Record<string, number>;
    distinctIds: number;
    /** 2xx answers beyond the first for the same webhook-id and target (at-least-once). */
    duplicateDeliveries: number;
    /** (event, target) pairs with no 2xx answer. */
    missingDeliveries: number;
    invalidSignatures: number;
  };
  deadLetters: number;
  outboxLeft: number;
  scheduleLeft: number;
  secretsScan: { scannedBytes: number; hits: string[] };
  exitCodes: (number | null)[];
  fatalLines: number;
  checks: Check[];
  ok: boolean;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

async function waitUntil(what: string, fn: () => Promise<boolean> | boolean, timeoutMs: number, describe?: () => Promise<string>): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await fn()) return;
    } catch {
      // not yet (Redis restarting, ...)
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${describe ? `: ${await describe().catch((e: unknown) => String(e))}` : ''}`);
    await sleep(100);
  }
}

interface Replica {
  child: ChildProcess;
  out: string[];
  exited: Promise<number | null>;
  ready(timeoutMs?: number): Promise<void>;
  kill9(): Promise<void>;
  stop(timeoutMs?: number): Promise<number | null>;
}

function spawnReplica(env: Record<string, string>): Replica {
  const child = spawn(process.execPath, [MAIN, 'run'], {
    cwd: ROOT,
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? tmpdir(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out: string[] = [];
  child.stdout?.setEncoding('utf8').on('data', (s: string) => out.push(s));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => out.push(s));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const alive = () => child.exitCode === null && child.signalCode === null;
  return {
    child,
    out,
    exited,
    async ready(timeoutMs = 30_000) {
      await waitUntil('a replica to report running', () => out.join('').includes('"msg":"letta-run-watcher running"'), timeoutMs, async () => out.join('').slice(-2000));
    },
    async kill9() {
      if (alive()) child.kill('SIGKILL');
      await exited;
    },
    async stop(timeoutMs = 20_000) {
      if (alive()) child.kill('SIGTERM');
      const code = await Promise.race([exited, sleep(timeoutMs).then(() => 'timeout' as const)]);
      if (code === 'timeout') {
        child.kill('SIGKILL');
        await exited;
        return null;
      }
      return code;
    },
  };
}

/**
 * A pass-through in front of the simulator that sees every request and answer: it checks the
 * request path and counts malformed 200 bodies, which the simulator's stats file under "200".
 */
interface Tap {
  url: string;
  requests: number;
  badPaths: string[];
  malformed: number;
  close(): Promise<void>;
}

async function startTap(upstream: string): Promise<Tap> {
  const target = new URL(upstream);
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  const tap: Tap = { url: '', requests: 0, badPaths: [], malformed: 0, close: async () => {} };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? '';
    // Besides single runs the daemon asks for Letta's health and the list of active runs.
    const other = path === '/v1/health/' || path.startsWith('/v1/runs/?');
    if (path !== '/v1/health/') tap.requests++;
    if (!RUN_PATH.test(path) && !other && tap.badPaths.length < 100) tap.badPaths.push(path);
    const up = httpRequest(
      { host: target.hostname, port: target.port, path, method: req.method, headers: req.headers, agent },
      (ur) => {
        const chunks: Buffer[] = [];
        ur.on('data', (c: Buffer) => chunks.push(c));
        ur.on('error', () => res.destroy());
        ur.on('end', () => {
          const body = Buffer.concat(chunks);
          if (ur.statusCode === 200 && !other && !isRun(body)) tap.malformed++;
          if (res.destroyed) return;
          res.writeHead(ur.statusCode ?? 502, ur.headers);
          res.end(body);
        });
      },
    );
    up.on('error', () => res.destroy());
    // The daemon gave up (a hung request timed out): drop the upstream request too.
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  tap.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  tap.close = () =>
    new Promise<void>((r) => {
      server.close(() => r());
      server.closeAllConnections();
      agent.destroy();
    });
  return tap;
}

function isRun(body: Buffer): boolean {
  try {
    const v = JSON.parse(body.toString('utf8')) as { agent_id?: unknown; status?: unknown };
    return typeof v === 'object' && v !== null && typeof v.agent_id === 'string' && (v.status === undefined || v.status === null || typeof v.status === 'string');
  } catch {
    return false;
  }
}

const execFileP = promisify(execFile);

async function cli(env: Record<string, string>, ...args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await execFileP(process.execPath, [MAIN, ...args], {
      cwd: ROOT,
      env: { PATH: process.env['PATH'] ?? '', ...env },
      timeout: 30_000,
      maxBuffer: 64 * 1024 * 1024,
    });
    return stdout + stderr;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    return `${e.stdout ?? ''}${e.stderr ?? ''}${e.message}`;
  }
}

/** Finds each secret in the texts; returns "<secret name> in <where>" per hit. */
export function scanSecrets(secrets: Readonly<Record<string, string>>, texts: Readonly<Record<string, string>>): { scannedBytes: number; hits: string[] } {
  const hits: string[] = [];
  let scannedBytes = 0;
  for (const [where, text] of Object.entries(texts)) {
    scannedBytes += Buffer.byteLength(text);
    for (const [name, secret] of Object.entries(secrets)) {
      if (secret.length >= 8 && text.includes(secret)) hits.push(`${name} in ${where}`);
    }
  }
  return { scannedBytes, hits };
}

async function readStream(redis: Redis, key: string): Promise<{ raw: string[]; events: WatchEvent[] }> {
  const raw: string[] = [];
  let start = '-';
  for (;;) {
    const page = await redis.xrange(key, start, '+', 'COUNT', 1000);
    for (const [, fields] of page) raw.push(fields[fields.indexOf('event') + 1] ?? '');
    if (page.length < 1000) break;
    start = `(${page[page.length - 1]?.[0] ?? ''}`;
  }
  return { raw, events: raw.map((r) => JSON.parse(r) as WatchEvent) };
}

// ---------------------------------------------------------------------------------------------
// The run

export async function runChaos(partial: Partial<ChaosOptions> = {}): Promise<ChaosReport> {
  const o: ChaosOptions = { ...FULL_CHAOS, ...partial };
  const started = Date.now();
  const t = () => `[${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s]`;
  const say = (s: string) => o.log(`${t()} ${s}`);
  const rnd = seeded(o.seed);
  const between = (lo: number, hi: number) => lo + rnd() * (hi - lo);
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  const replicas: Replica[] = [];
  const everyReplica: Replica[] = [];

  say(`chaos: ${o.runs} runs, ${o.replicas} replicas, ${o.seconds} s of chaos, seed ${o.seed}`);
  try {
    // --- the world around the daemon -------------------------------------------------------
    const redisServer: RedisServer = await startRedisServer({ appendOnly: true });
    cleanups.push(() => redisServer.destroy());
    const redis = new Redis(redisServer.url, { maxRetriesPerRequest: null, retryStrategy: () => 100 });
    redis.on('error', () => {});
    cleanups.push(() => redis.disconnect());

    const apiKey = `sk-test-${randomBytes(16).toString('hex')}`;
    const secret = newSecret();
    const sim = await startSimulator({ port: 0, apiKey, random: seeded(o.seed ^ 0x5eed), faults: o.faults });
    cleanups.push(() => sim.close());
    const tap = await startTap(sim.url);
    cleanups.push(() => tap.close());

    const rxRandom = seeded(o.seed ^ 0xbeef);
    let failedOnPurpose = 0;
    const tried = new Set<string>();
    const rx: Receiver = await startReceiver({
      secrets: [secret],
      respond: (req) => {
        const first = !tried.has(`${req.path} ${req.id}`);
        tried.add(`${req.path} ${req.id}`);
        if (first && rxRandom() < o.receiverFailRate) {
          failedOnPurpose++;
          return { status: rxRandom() < 0.5 ? 500 : 503, body: 'chaos' };
        }
        return { status: 200, body: 'ok' };
      },
    });
    cleanups.push(() => rx.close());
    const targets = ['/events', '/letta'];

    const prefix = `chaos-${randomBytes(4).toString('hex')}`;
    const layout = layoutFor(prefix);
    const k = { ...layout.partitions[0]!, intake: layout.intake };
    const dir = mkdtempSync(join(tmpdir(), 'lrw-chaos-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const configPath = join(dir, 'watcher.json');
    writeFileSync(
      configPath,
      JSON.stringify({
        // Hung requests time out in a second; the webhook schedule is the default one (at once,
        // 5 s, 5 min, ...), so deliveries the outage and the 30 % failures push back to 5 min
        // come through only by catching up when the endpoint answers again.
        poll: { leaseMs: o.leaseMs },
        letta: { requestTimeoutMs: 1000, retries: 1, retryMinMs: 20, retryMaxMs: 100, retryAfterCapMs: 200, authPauseMs: 1000 },
        webhooks: {
          targets: [
            { url: `${rx.url}/events`, name: 'events' },
            { url: `${rx.url}/letta`, name: 'letta', format: 'letta' },
          ],
          attemptTimeoutMs: 2000,
        },
      }),
    );
    const env: Record<string, string> = {
      REDIS_URL: redisServer.url,
      WATCHER_KEY_PREFIX: prefix,
      LETTA_BASE_URL: tap.url,
      LETTA_API_KEY: apiKey,
      WATCHER_WEBHOOK_SECRET: secret,
      WATCHER_CONFIG: configPath,
      WATCHER_POLL_INITIAL_MS: '200',
      WATCHER_POLL_MAX_MS: '2000',
      WATCHER_HTTP_PORT: '0',
      WATCHER_LOG_LEVEL: o.logLevel,
      WATCHER_SHUTDOWN_GRACE_MS: '2000',
    };
    const start = () => {
      const r = spawnReplica(env);
      everyReplica.push(r);
      return r;
    };
    for (let i = 0; i < o.replicas; i++) replicas.push(start());
    await Promise.all(replicas.map((r) => r.ready()));
    say(`${o.replicas} replicas running (prefix ${prefix}); Letta API behind a tap at ${tap.url}`);

    // --- the chaos phase ----------------------------------------------------------------------
    const chaosStart = Date.now();
    const chaosEnd = chaosStart + o.seconds * 1000;
    const at = (fraction: number) => chaosStart + fraction * o.seconds * 1000;
    const until = async (when: number) => {
      const ms = when - Date.now();
      if (ms > 0) await sleep(ms);
    };
    /** Producers and the Redis restart take turns: a push whose reply is lost would be re-sent. */
    let redisTurn: Promise<unknown> = Promise.resolve();
    const withRedis = <T>(fn: () => Promise<T>): Promise<T> => {
      const p = redisTurn.then(fn);
      redisTurn = p.catch(() => {});
      return p;
    };

    const expected = new Map<string, (typeof OUTCOMES)[number]>();
    const producer = (async () => {
      const batches = Math.max(1, Math.ceil(o.runs / 50));
      let made = 0;
      for (let b = 0; b < batches; b++) {
        await until(at((o.enqueueFraction * b) / batches));
        const n = Math.min(50, o.runs - made);
        const ids: string[] = [];
        for (let i = 0; i < n; i++) {
          const outcome = OUTCOMES[Math.floor(rnd() * OUTCOMES.length)] ?? 'completed';
          const run = sim.createRun({ durationMs: Math.round(between(o.runDurationMs[0], o.runDurationMs[1])), outcome });
          expected.set(run.id, outcome);
          ids.push(run.id);
        }
        made += n;
        await withRedis(() => redis.lpush(k.intake, ...ids));
      }
      say(`all ${made} runs enqueued`);
    })();

    let kills = 0;
    const killer = (async () => {
      const times: number[] = [];
      if (o.kills !== undefined) {
        for (let i = 0; i < o.kills; i++) times.push(at((i + 0.5 + (rnd() - 0.5) * 0.6) / o.kills * 0.9 + 0.05));
      } else {
        for (let when = chaosStart + between(...o.killEveryMs); when < chaosEnd; when += between(...o.killEveryMs)) times.push(when);
      }
      for (const when of times) {
        await until(when);
        const i = Math.floor(rnd() * replicas.length);
        const victim = replicas[i];
        if (!victim) continue;
        const watched = await Promise.race([redis.zcard(k.due), sleep(500).then(() => -1)]);
        await victim.kill9();
        kills++;
        say(`kill -9 replica #${i} (pid ${victim.child.pid}); runs watched: ${watched === -1 ? '? (Redis away)' : watched}`);
        replicas[i] = start();
      }
    })();

    let receiverOutageMs = 0;
    let receiverUpAt = 0;
    const receiverOutage = (async () => {
      if (o.receiverDownMs <= 0) return;
      await until(at(o.receiverDownAt));
      await rx.down();
      const downAt = performance.now();
      say(`webhook receiver down for ${o.receiverDownMs / 1000} s`);
      // A timer may fire up to a millisecond early by a fresh clock read (it counts from the
      // event loop's cached time), so wait until the clock itself says the outage is over.
      for (let left = o.receiverDownMs; left > 0; left = downAt + o.receiverDownMs - performance.now()) await sleep(Math.ceil(left));
      await rx.up();
      receiverUpAt = Date.now();
      receiverOutageMs = Math.round(performance.now() - downAt);
      say('webhook receiver up again');
    })();

    let redisRestarts = 0;
    const redisRestart = (async () => {
      await until(at(o.redisRestartAt));
      await withRedis(async () => {
        await redisServer.stop();
        say(`redis-server stopped (AOF, appendfsync always); back in ${o.redisDownMs / 1000} s`);
        await sleep(o.redisDownMs);
        await redisServer.start();
        redisRestarts++;
        say('redis-server started again');
      });
    })();

    await Promise.all([producer, killer, receiverOutage, redisRestart]);
    await until(chaosEnd);
    say(`chaos phase over: ${kills} kills, ${redisRestarts} Redis restart; draining`);

    // --- drain ----------------------------------------------------------------------------------
    const progress = async () => {
      const [events, watched, intake, outbox] = await Promise.all([redis.xlen(k.events), redis.zcard(k.due), redis.llen(k.intake), redis.zcard(k.webhooks)]);
      return `events ${events}/${o.runs}, watched ${watched}, intake ${intake}, outbox ${outbox}`;
    };
    let lastSaid = 0;
    await waitUntil(
      'every event and every delivery',
      async () => {
        if (Date.now() - lastSaid > 5000) {
          lastSaid = Date.now();
          say(await progress());
        }
        const [events, watched, intake, outbox] = await Promise.all([redis.xlen(k.events), redis.zcard(k.due), redis.llen(k.intake), redis.zcard(k.webhooks)]);
        return events >= o.runs && watched === 0 && intake === 0 && outbox === 0;
      },
      o.drainTimeoutMs,
      progress,
    ).catch((err: unknown) => say(String(err)));
    const exitCodes = await Promise.all(replicas.map((r) => r.stop()));
    say(`replicas stopped with SIGTERM: exit codes ${exitCodes.join(', ')}`);

    // --- what happened ----------------------------------------------------------------------------
    const { raw: streamRaw, events } = await readStream(redis, k.events);
    const deadRaw = await redis.lrange(k.dead, 0, -1);
    const outboxLeft = await redis.zcard(k.webhooks);
    const scheduleLeft = await redis.zcard(k.due);
    const cliEnv = { REDIS_URL: redisServer.url, WATCHER_KEY_PREFIX: prefix, LETTA_API_KEY: apiKey, WATCHER_WEBHOOK_SECRET: secret };
    const statusText = await cli(cliEnv, 'status');
    const statusJson = await cli(cliEnv, 'status', '--json');
    const deadJson = await cli(cliEnv, 'dead', 'list', '--json');

    const byRun = new Map<string, WatchEvent[]>();
    for (const e of events) byRun.set(e.data.run_id, [...(byRun.get(e.data.run_id) ?? []), e]);
    let missingEvents = 0;
    let duplicatesInStream = 0;
    let wrongEventTypes = 0;
    for (const [id, outcome] of expected) {
      const got = byRun.get(id) ?? [];
      if (got.length === 0) missingEvents++;
      if (got.length > 1) duplicatesInStream += got.length - 1;
      for (const e of got) if (e.type !== `run.${outcome}`) wrongEventTypes++;
    }
    const unexpectedEvents = [...byRun.keys()].filter((id) => !expected.has(id)).length;

    const eventIds = new Set(events.map((e) => e.id));
    const requests: readonly ReceivedRequest[] = rx.requests;
    const distinctIdsByTarget: Record<string, number> = {};
    let duplicateDeliveries = 0;
    let missingDeliveries = 0;
    for (const path of targets) {
      distinctIdsByTarget[path] = rx.distinctIds(path).size;
      const delivered = rx.deliveredIds(path);
      const ok2xx = rx.on(path).filter((r) => r.status !== undefined && r.status >= 200 && r.status < 300).length;
      duplicateDeliveries += ok2xx - delivered.size;
      for (const id of eventIds) if (!delivered.has(id)) missingDeliveries++;
    }
    const invalidSignatures = requests.filter((r) => !r.verified).length;
    // Detection lag under chaos, from each run's end to its event.
    const lags = events
      .map((e) => Date.parse(e.data.watch.detected_at) - (parseLettaTime(e.data.run?.completed_at) ?? Number.NaN))
      .filter((x) => !Number.isNaN(x))
      .sort((a, b) => a - b);
    const lagP99Ms = lags[Math.min(lags.length - 1, Math.ceil(0.99 * lags.length) - 1)] ?? Number.NaN;
    // How long after the receiver came back (or after its event, if later) each event's last
    // target got it: every webhook within 60 s of the receiver coming back.
    const detectedAt = new Map(events.map((e) => [e.id, Date.parse(e.data.watch.detected_at)]));
    let catchUpMs = 0;
    for (const path of targets) {
      const first = new Map<string, number>();
      for (const r of rx.on(path)) {
        if (r.id === undefined || r.status === undefined || r.status < 200 || r.status >= 300) continue;
        first.set(r.id, Math.min(first.get(r.id) ?? Infinity, r.answeredAt ?? r.at));
      }
      for (const [id, at] of first) catchUpMs = Math.max(catchUpMs, at - Math.max(receiverUpAt, detectedAt.get(id) ?? 0));
    }
    const answered2xx = requests.filter((r) => r.status !== undefined && r.status >= 200 && r.status < 300).length;

    const outputs = everyReplica.map((r) => r.out.join(''));
    const fatalLines = outputs.reduce((n, s) => n + (s.match(/"level":60|fatal:/g)?.length ?? 0), 0);
    const texts: Record<string, string> = {
      'replica output': outputs.join('\n'),
      'P:events': streamRaw.join('\n'),
      'P:dead': deadRaw.join('\n'),
      status: statusText,
      'status --json': statusJson,
      'dead list --json': deadJson,
      'webhook requests': requests.map((r) => `${JSON.stringify(r.headers)}\n${r.body}`).join('\n'),
    };
    const secretsScan = scanSecrets({ LETTA_API_KEY: apiKey, WATCHER_WEBHOOK_SECRET: secret, 'webhook secret (base64 part)': secret.slice('whsec_'.length) }, texts);

    const stats = sim.stats();
    const by = stats.byStatus;
    const faults = {
      serverErrors: (by['500'] ?? 0) + (by['502'] ?? 0) + (by['503'] ?? 0),
      rateLimited: by['429'] ?? 0,
      hung: by['hung'] ?? 0,
      malformed: tap.malformed,
    };

    const checks: Check[] = [];
    const check = (name: string, ok: boolean, detail: string) => checks.push({ name, ok, detail });
    check('faults injected (each kind)', Object.values(faults).every((n) => n > 0), JSON.stringify(faults));
    check('replicas killed', kills > 0, String(kills));
    check('Redis restarted once', redisRestarts === 1, String(redisRestarts));
    check('duplicates in stream = 0', duplicatesInStream === 0, String(duplicatesInStream));
    check('missing events = 0', missingEvents === 0, String(missingEvents));
    check('unexpected events = 0', unexpectedEvents === 0, String(unexpectedEvents));
    check('event type = run outcome', wrongEventTypes === 0, `${wrongEventTypes} wrong`);
    check('events = runs', events.length === o.runs, `${events.length} of ${o.runs}`);
    check('missing deliveries = 0', missingDeliveries === 0, String(missingDeliveries));
    check('invalid signatures = 0', invalidSignatures === 0, String(invalidSignatures));
    check('dead letters = 0', deadRaw.length === 0, `${deadRaw.length}${deadRaw[0] ? `: ${deadRaw[0].slice(0, 300)}` : ''}`);
    check('outbox and schedule empty', outboxLeft === 0 && scheduleLeft === 0, `outbox ${outboxLeft}, schedule ${scheduleLeft}`);
    check('API requests only to /v1/runs/{id}, the list and /v1/health/', tap.badPaths.length === 0, tap.badPaths.slice(0, 5).join(' '));
    check('no secret in logs, events, dead letters, status, webhooks', secretsScan.hits.length === 0, secretsScan.hits.join('; ') || `${secretsScan.scannedBytes} bytes scanned`);
    check('replicas exit 0 on SIGTERM', exitCodes.every((c) => c === 0), exitCodes.join(','));
    check('no fatal log lines', fatalLines === 0, String(fatalLines));
    check('p99 detection lag ≤ 20 s', lagP99Ms <= 20_000, `${(lagP99Ms / 1000).toFixed(2)} s`);
    check('every webhook within 60 s of the receiver coming back', catchUpMs <= 60_000, `${(catchUpMs / 1000).toFixed(1)} s at most`);

    return {
      seed: o.seed,
      elapsedMs: Date.now() - started,
      runs: o.runs,
      replicas: o.replicas,
      apiRequests: stats.requests,
      simulatorByStatus: by,
      faults,
      badApiPaths: tap.badPaths.length,
      kills,
      redisRestarts,
      receiverOutageMs,
      lagP99Ms,
      catchUpMs,
      events: events.length,
      duplicatesInStream,
      missingEvents,
      unexpectedEvents,
      wrongEventTypes,
      webhook: {
        targets,
        received: requests.length,
        answered2xx,
        failedOnPurpose,
        distinctIdsByTarget,
        distinctIds: rx.distinctIds().size,
        duplicateDeliveries,
        missingDeliveries,
        invalidSignatures,
      },
      deadLetters: deadRaw.length,
      outboxLeft,
      scheduleLeft,
      secretsScan,
      exitCodes,
      fatalLines,
      checks,
      ok: checks.every((c) => c.ok),
    };
  } finally {
    await Promise.all(everyReplica.map((r) => r.kill9()));
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch {
        // best effort
      }
    }
  }
}

export function formatReport(r: ChaosReport): string {
  const row = (k: string, v: string | number) => `  ${k.padEnd(50)}${v}`;
  const w = r.webhook;
  const lines = [
    `chaos run (seed ${r.seed}) in ${(r.elapsedMs / 1000).toFixed(1)} s`,
    row('runs', r.runs),
    row('replicas', r.replicas),
    row('API requests (simulator)', r.apiRequests),
    row('simulator answers by status', JSON.stringify(r.simulatorByStatus)),
    row('faults injected: 5xx', r.faults.serverErrors),
    row('faults injected: 429 with Retry-After', r.faults.rateLimited),
    row('faults injected: hung requests', r.faults.hung),
    row('faults injected: malformed bodies (tap)', r.faults.malformed),
    row('API requests outside /v1/runs/{id}, the list and /v1/health/', r.badApiPaths),
    row('kill -9 of a replica', r.kills),
    row('Redis restarts', r.redisRestarts),
    row('webhook receiver outage', `${(r.receiverOutageMs / 1000).toFixed(1)} s`),
    row('detection lag p99', `${(r.lagP99Ms / 1000).toFixed(2)} s`),
    row('longest webhook wait after the receiver came back', `${(r.catchUpMs / 1000).toFixed(1)} s`),
    row('events in P:events', r.events),
    row('duplicates in stream', r.duplicatesInStream),
    row('missing events', r.missingEvents),
    row('unexpected events', r.unexpectedEvents),
    row('events of the wrong type', r.wrongEventTypes),
    row(`webhook deliveries received (${w.targets.join(', ')})`, w.received),
    row('  answered 2xx / failed on purpose', `${w.answered2xx} / ${w.failedOnPurpose}`),
    row('distinct webhook-ids', `${w.distinctIds} (${Object.entries(w.distinctIdsByTarget).map(([p, n]) => `${p} ${n}`).join(', ')})`),
    row('duplicate deliveries (by webhook-id)', w.duplicateDeliveries),
    row('missing deliveries', w.missingDeliveries),
    row('invalid signatures', w.invalidSignatures),
    row('dead letters', r.deadLetters),
    row('secrets scan', r.secretsScan.hits.length === 0 ? `clean (${(r.secretsScan.scannedBytes / 1e6).toFixed(1)} MB scanned)` : r.secretsScan.hits.join('; ')),
    row('replica exit codes on SIGTERM', r.exitCodes.join(', ')),
    '',
    'checks:',
    ...r.checks.map((c) => `  ${c.ok ? 'PASS' : 'FAIL'}  ${c.name.padEnd(58)}${c.detail}`),
    '',
    r.ok ? 'chaos: all checks passed' : `chaos: ${r.checks.filter((c) => !c.ok).length} check(s) FAILED`,
  ];
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Command line

const isMain = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string' },
      replicas: { type: 'string' },
      seconds: { type: 'string' },
      seed: { type: 'string' },
      'redis-down-seconds': { type: 'string' },
      'receiver-down-seconds': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write('Usage: node scripts/chaos.ts [--runs 2000] [--replicas 3] [--seconds 90] [--seed N] [--redis-down-seconds 3] [--receiver-down-seconds 20]\n');
    process.exit(0);
  }
  const num = (v: string | undefined, name: string, fallback: number) => {
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) {
      process.stderr.write(`--${name}: expected a non-negative number, got ${JSON.stringify(v)}\n`);
      process.exit(78);
    }
    return n;
  };
  const seed = num(values.seed, 'seed', Math.floor(Math.random() * 2 ** 31));
  const report = await runChaos({
    runs: num(values.runs, 'runs', FULL_CHAOS.runs),
    replicas: Math.max(1, num(values.replicas, 'replicas', FULL_CHAOS.replicas)),
    seconds: num(values.seconds, 'seconds', FULL_CHAOS.seconds),
    seed,
    redisDownMs: num(values['redis-down-seconds'], 'redis-down-seconds', FULL_CHAOS.redisDownMs / 1000) * 1000,
    receiverDownMs: num(values['receiver-down-seconds'], 'receiver-down-seconds', FULL_CHAOS.receiverDownMs / 1000) * 1000,
  });
  process.stdout.write(`${formatReport(report)}\n`);
  process.exit(report.ok ? 0 : 1);
}
