import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { parseLettaTime } from '../src/letta/run-state.ts';
import type { WatchEvent } from '../src/events/event.ts';
import { layoutFor } from '../src/redis/keys.ts';
import { defineScripts } from '../src/redis/scripts.ts';
import { makeIntakeStore } from '../src/intake/store.ts';
import { makeRunStore, type ClaimBatch } from '../src/polling/runs.ts';
import { startSimulator } from '../tools/simulator/server.ts';
import { fixed, lagSvg, logUniform, monteCarlo, simulateCadence, summarize, type LagSummary, type MonteCarlo } from './lag.ts';
import { benchCluster, clusterMarkdown, type ClusterBench } from './cluster.ts';
import { benchDetection, detectionMarkdown, detectionSvg, type Detection } from './detection.ts';
import { benchIdle, idleMarkdown, type Idle } from './idle.ts';
import { latestProfile, profileMarkdown, summarizeProfile, type ProfileSummary } from './profile.ts';
import {
  NODE,
  ROOT,
  cleanupNow,
  commandStats,
  buildDaemon,
  daemonReady,
  fmt,
  installCleanupHandlers,
  machine,
  percentile,
  rssOf,
  scriptInternalCommands,
  seeded,
  setDaemonNodeArgs,
  startApiServer,
  startDaemon,
  startRedis,
  statDelta,
  tempDir,
  track,
  usedMemory,
  waitFor,
  type ApiServer,
  type BenchRedis,
  type CommandStat,
  type DaemonProcess,
  type Machine,
} from './support.ts';

/**
 * `npm run bench`: measures the daemon in one run and writes BENCHMARKS.md and bench/lag.svg.
 * `node bench/run.ts --smoke`: every benchmark at tiny sizes (CI), writes nothing.
 * `--no-profile`: skip the CPU profile taken after the measurements.
 * `--only=throughput,intake,scale,lag,shutdown,profile`: just those sections (to re-measure
 *   after a change; combine with --smoke for tiny sizes); writes nothing.
 * `--node-args="--max-semi-space-size=2"`: node flags for every daemon started, instead of the
 *   image's (noted in the report).
 *
 * Every figure is printed as one `FIGURE <name>: ...` line.
 */

const args = new Set(process.argv.slice(2));
const SMOKE = args.has('--smoke');
const SECTIONS = ['throughput', 'intake', 'scale', 'lag', 'detection', 'shutdown', 'cluster', 'idle', 'profile'] as const;
const onlyArg = [...args].find((a) => a.startsWith('--only='));
const ONLY = onlyArg === undefined ? undefined : new Set(onlyArg.slice('--only='.length).split(','));
for (const name of ONLY ?? []) {
  if (!(SECTIONS as readonly string[]).includes(name)) throw new Error(`--only: unknown section ${name} (known: ${SECTIONS.join(', ')})`);
}
const nodeArgsArg = [...args].find((a) => a.startsWith('--node-args='));
/**
 * The heap flags the image's ENTRYPOINT passes between `node` and `dist/main.js` (read from the
 * Dockerfile): the ones the daemon also re-executes itself with, named in the report.
 */
function imageNodeFlags(): string[] {
  const dockerfile = readFileSync(new URL('../Dockerfile', import.meta.url), 'utf8');
  const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(dockerfile)?.[1] ?? '[]') as string[];
  const node = entrypoint.indexOf('node');
  const main = entrypoint.indexOf('dist/main.js');
  if (node < 0 || main < node) throw new Error('Dockerfile: ENTRYPOINT does not run node … dist/main.js');
  return entrypoint.slice(node + 1, main);
}
/**
 * By default the daemon starts as users start it, `node dist/main.js run` with no flags: it
 * re-executes itself with the image's heap flags (src/main.ts), and memory is read over its
 * whole process tree. --node-args passes flags on the command line instead.
 */
const DAEMON_NODE_ARGS = nodeArgsArg === undefined ? [] : nodeArgsArg.slice('--node-args='.length).split(/\s+/).filter(Boolean);
const want = (section: (typeof SECTIONS)[number]) => ONLY === undefined || ONLY.has(section);
const PROFILE = !SMOKE && !args.has('--no-profile') && want('profile');
const PREFIX = 'letta-watch';
const LAYOUT = layoutFor(PREFIX);
const KEYS = { ...LAYOUT.partitions[0]!, intake: LAYOUT.intake };
const LEASE_MS = 120_000;
const CONCURRENCY = 32;
const DEFAULT_CADENCE = { initialMs: 1000, maxMs: 30_000, factor: 1.6, jitter: 0.2 };

const SIZES = SMOKE
  ? {
      throughputRuns: 500, warmupS: 1, windowS: 2, throughputRounds: 1,
      intakeN: 5_000,
      claimSizes: [3_000, 6_000], scaleN: 20_000, scalePollS: 2, claimSamples: 5,
      mcN: 5_000, liveScale: 200, liveRuns: 40, liveSpreadMs: 200,
      shutdownN: 200, drainLatencyMs: 1_500, handBackLatencyMs: 30_000, handBackGraceMs: 500,
      profileS: 0,
      clusterRuns: 500, clusterWarmupS: 1, clusterWindowS: 2,
      detectRuns: 40, detectMinMs: 300, detectMaxMs: 3000, idleS: 3,
    }
  : {
      throughputRuns: 10_000, warmupS: 3, windowS: 5, throughputRounds: 3,
      intakeN: 100_000,
      claimSizes: [10_000, 100_000], scaleN: 1_000_000, scalePollS: 15, claimSamples: 30,
      mcN: 200_000, liveScale: 40, liveRuns: 400, liveSpreadMs: 2_000,
      shutdownN: 10_000, drainLatencyMs: 8_000, handBackLatencyMs: 60_000, handBackGraceMs: 2_000,
      profileS: 10,
      clusterRuns: 20_000, clusterWarmupS: 3, clusterWindowS: 10,
      detectRuns: 500, detectMinMs: 1000, detectMaxMs: 120_000, idleS: 30,
    };
/** How far the simulator's list lags retrieve in the detection section. */
const DETECT_LIST_LAG_MS = 500;
const CLUSTER_PARTITIONS = 6;

// ---------------------------------------------------------------------------------------------
// Results

interface Target {
  figure: string;
  target: string;
  value: string;
  met: boolean | undefined;
}
const targets: Target[] = [];

function figure(name: string, text: string): void {
  process.stdout.write(`FIGURE ${name}: ${text}\n`);
}
function note(text: string): void {
  process.stderr.write(`bench: ${text}\n`);
}
const verdict = (met: boolean | undefined) => (met === undefined ? 'n/a' : met ? 'MET' : 'MISSED');

// ---------------------------------------------------------------------------------------------
// Redis helpers

async function reset(r: Redis): Promise<void> {
  await r.flushall('SYNC');
  await r.config('RESETSTAT');
}

/** LPUSHes `n` bare run IDs, pipelined (1,000 per LPUSH, 100 LPUSHes per round trip). */
async function pushIntake(r: Redis, n: number): Promise<number> {
  const t0 = performance.now();
  let left = n;
  while (left > 0) {
    const pipe = r.pipeline();
    for (let c = 0; c < 100 && left > 0; c++) {
      const k = Math.min(1000, left);
      pipe.lpush(KEYS.intake, ...Array.from({ length: k }, () => `run-${randomUUID()}`));
      left -= k;
    }
    await pipe.exec();
  }
  return performance.now() - t0;
}

/** Fills the schedule through the intake path (the daemon's own intake script), from here. */
/** The daemon's own intake and claim, on the bench's connection. */
interface Schedule {
  take(): Promise<{ taken: number }>;
  claim(limit: number, leaseMs: number): Promise<ClaimBatch>;
}
function makeSchedule(r: Redis): Schedule {
  const ctx = { client: r, scripts: defineScripts(r), layout: LAYOUT, replica: 'bench' };
  const intake = makeIntakeStore(ctx, {
    batch: 10_000, batchBytes: 64 << 20, defaultMaxWatchMs: 86_400_000, maxEntryBytes: 65_536, maxWatchCapMs: 30 * 86_400_000, maxDepth: 32, maxTargetsPerRun: 16,
  });
  const runs = makeRunStore(ctx);
  return { take: () => intake.take(), claim: (limit, leaseMs) => runs.claim(0, limit, leaseMs) };
}

async function fillViaIntake(r: Redis, schedule: Schedule, n: number): Promise<void> {
  await pushIntake(r, n);
  for (;;) {
    const res = await schedule.take();
    if (res.taken === 0) break;
  }
  const z = await r.zcard(KEYS.due);
  if (z !== n) throw new Error(`fill: expected ${n} runs in the schedule, found ${z}`);
}

async function redisNow(r: Redis): Promise<number> {
  const [s, us] = await r.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

/** CPU time (ms) a process has used so far, from /proc/<pid>/stat (utime + stime). */
function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(rest[11]) + Number(rest[12])) * 1000) / 100;
  } catch {
    return Number.NaN;
  }
}

// ---------------------------------------------------------------------------------------------
// 1 + 2. Poll throughput and Redis cost per poll

interface Throughput {
  daemonRate: number;
  autocannonRate: number;
  autocannonOwnAverage: number;
  ratio: number;
  windowS: number;
  rounds: { daemon: number; autocannon: number; undici: number }[];
  cpuDaemon: { daemon: number; redis: number; api: number };
  cpuAutocannon: { autocannon: number; api: number };
  undiciRate: number;
  cpuUndici: { client: number; api: number };
  daemonCpuUsPerPoll: number;
  redis: RedisCost;
}

interface RedisCost {
  polls: number;
  commits: number;
  topLevel: number;
  total: number;
  perCommand: { name: string; calls: number; perPoll: number; kind: 'top-level' | 'inside scripts' | 'both' }[];
  claims: number;
  settles: number;
  idleLoops: number;
  evalshaUsPerPoll: number;
}

function redisCost(delta: Map<string, CommandStat>, polls: number, commits: number): RedisCost {
  const internal = scriptInternalCommands();
  delta.delete('info'); // the bench's own window markers
  delta.delete('xlen');
  let topLevel = 0;
  let total = 0;
  const perCommand: RedisCost['perCommand'] = [];
  for (const [name, s] of [...delta.entries()].sort((a, b) => b[1].calls - a[1].calls)) {
    total += s.calls;
    let kind: 'top-level' | 'inside scripts' | 'both';
    if (name === 'evalsha' || name === 'eval' || !internal.has(name)) {
      kind = 'top-level';
      topLevel += s.calls;
    } else if (name === 'hget') {
      // The poller's entryOf() sends one top-level HGET per committed event; the rest are
      // the settle script's fence checks.
      kind = 'both';
      topLevel += Math.min(s.calls, commits);
    } else {
      kind = 'inside scripts';
    }
    perCommand.push({ name, calls: s.calls, perPoll: s.calls / polls, kind });
  }
  const calls = (n: string) => delta.get(n)?.calls ?? 0;
  // ZRANGE is called only by the schedule's claim script (once per claim); RPOP once per
  // idle intake call; ZRANGEBYSCORE by both claim scripts (schedule and webhook outbox).
  const claims = calls('zrange');
  const intakeCalls = calls('rpop');
  const outboxClaims = Math.max(0, calls('zrangebyscore') - claims);
  const scripts = calls('evalsha') + calls('eval');
  return {
    polls,
    commits,
    topLevel,
    total,
    perCommand,
    claims,
    settles: Math.max(0, scripts - claims - intakeCalls - outboxClaims),
    idleLoops: intakeCalls + outboxClaims,
    evalshaUsPerPoll: ((delta.get('evalsha')?.usec ?? 0) + (delta.get('eval')?.usec ?? 0)) / polls,
  };
}

function autocannonPath(): string {
  return createRequire(import.meta.url).resolve('autocannon');
}

/** Runs a load generator (a node script) against the API stub; its rate over the same window. */
async function externalLoad(api: ApiServer, argv: string[]): Promise<{ rate: number; cpu: number; apiCpu: number; stdout: string }> {
  const child = track(spawn(NODE, argv, { stdio: ['ignore', 'pipe', 'pipe'] }));
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr?.on('data', (c: Buffer) => (stderr = (stderr + c.toString('utf8')).slice(-4000)));
  const done = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  await sleep(SIZES.warmupS * 1000);
  const c0 = { client: cpuMs(child.pid ?? 0), api: cpuMs(api.pid) };
  const s0 = await api.stats();
  await sleep(SIZES.windowS * 1000);
  const s1 = await api.stats();
  const c1 = { client: cpuMs(child.pid ?? 0), api: cpuMs(api.pid) };
  const code = await done;
  if (code !== 0) throw new Error(`${argv[0] ?? 'load generator'} exited with ${code}: ${stderr}`);
  const secs = (s1.t - s0.t) / 1000;
  return {
    rate: (s1.requests - s0.requests) / secs,
    cpu: (c1.client - c0.client) / 10 / secs,
    apiCpu: (c1.api - c0.api) / 10 / secs,
    stdout,
  };
}

interface DaemonRound {
  rate: number;
  polls: number;
  secs: number;
  delta: Map<string, CommandStat>;
  commits: number;
  cpu: Throughput['cpuDaemon'];
}

async function daemonRound(redis: BenchRedis, redisPid: number, api: ApiServer): Promise<DaemonRound> {
  const r = redis.client;
  const d = startDaemon({
    redisUrl: redis.url,
    apiUrl: api.url,
    env: {
      WATCHER_POLL_INITIAL_MS: '1',
      WATCHER_POLL_MAX_MS: '1',
      WATCHER_POLL_JITTER: '0',
      WATCHER_CONCURRENCY: String(CONCURRENCY),
    },
    config: {},
  });
  try {
    await daemonReady(r, d);
    await sleep(SIZES.warmupS * 1000);
    const cpu0 = { daemon: cpuMs(d.pid), redis: cpuMs(redisPid), api: cpuMs(api.pid) };
    const [s0, c0, x0] = await Promise.all([api.stats(), commandStats(r), r.xlen(KEYS.events)]);
    await sleep(SIZES.windowS * 1000);
    const [s1, c1, x1] = await Promise.all([api.stats(), commandStats(r), r.xlen(KEYS.events)]);
    const cpu1 = { daemon: cpuMs(d.pid), redis: cpuMs(redisPid), api: cpuMs(api.pid) };
    const secs = (s1.t - s0.t) / 1000;
    const stop = await d.stop();
    if (stop.code !== 0) throw new Error(`daemon exited with ${stop.code}: ${d.logs()}`);
    return {
      rate: (s1.requests - s0.requests) / secs,
      polls: s1.requests - s0.requests,
      secs,
      delta: statDelta(c0, c1),
      commits: x1 - x0,
      cpu: {
        daemon: (cpu1.daemon - cpu0.daemon) / 10 / secs,
        redis: (cpu1.redis - cpu0.redis) / 10 / secs,
        api: (cpu1.api - cpu0.api) / 10 / secs,
      },
    };
  } finally {
    await d.stop();
  }
}

/**
 * CPU per request of each client, and what the 50 % target would take on this machine: the
 * rate it names, and the CPU the daemon's one thread, Redis and the API stub would need there
 * at the per-poll costs just measured.
 */
function budget(t: Throughput): string[] {
  const per = (pct: number, rate: number) => (pct * 10_000) / rate;
  const daemonUs = per(t.cpuDaemon.daemon, t.daemonRate);
  const redisUs = per(t.cpuDaemon.redis, t.daemonRate);
  const apiUs = per(t.cpuDaemon.api, t.daemonRate);
  const target = t.autocannonRate / 2;
  const need = (us: number) => (us * target) / 10_000;
  const cores = cpus().length;
  return [
    `CPU per request: daemon ${daemonUs.toFixed(1)} µs of its own + ${redisUs.toFixed(1)} µs of Redis + ${apiUs.toFixed(1)} µs of the API stub; ` +
      `autocannon ${per(t.cpuAutocannon.autocannon, t.autocannonRate).toFixed(1)} µs + ${per(t.cpuAutocannon.api, t.autocannonRate).toFixed(1)} µs of the stub; ` +
      `the undici reference ${per(t.cpuUndici.client, t.undiciRate).toFixed(1)} µs + ${per(t.cpuUndici.api, t.undiciRate).toFixed(1)} µs of the stub.`,
    '',
    `What 50 % would take here: ${fmt(target)} polls/s, at which these costs come to ${need(daemonUs).toFixed(0)} % of a core for the daemon's one JavaScript thread, ` +
      `${need(redisUs).toFixed(0)} % for Redis and ${need(apiUs).toFixed(0)} % for the stub: ${(need(daemonUs) + need(redisUs) + need(apiUs)).toFixed(0)} % in all on ${cores} cores. ` +
      `The daemon's thread would have to spend at most ${(1_000_000 / target).toFixed(1)} µs per poll, of which the HTTP client alone (the reference) takes ${per(t.cpuUndici.client, t.undiciRate).toFixed(1)} µs.`,
  ];
}

function median(xs: readonly number[]): number {
  return percentile([...xs].sort((a, b) => a - b), 50);
}

async function benchThroughput(redis: BenchRedis, redisPid: number): Promise<Throughput> {
  const r = redis.client;
  const schedule = makeSchedule(r);
  const api = await startApiServer(0);
  try {
    await reset(r);
    await fillViaIntake(r, schedule, SIZES.throughputRuns);
    // The same server, the same 32 connections: the daemon, a plain load generator
    // (autocannon), and the daemon's HTTP stack alone (undici dispatch + JSON.parse) as a reference.
    // Rounds alternate so a burst of other load on the machine hits all three alike.
    const url = `${api.url}/v1/runs/run-00000000-0000-4000-8000-000000000000`;
    const duration = SIZES.warmupS + SIZES.windowS + 2;
    const daemons: DaemonRound[] = [];
    const acs: Awaited<ReturnType<typeof externalLoad>>[] = [];
    const uns: Awaited<ReturnType<typeof externalLoad>>[] = [];
    for (let round = 0; round < SIZES.throughputRounds; round++) {
      daemons.push(await daemonRound(redis, redisPid, api));
      acs.push(await externalLoad(api, [autocannonPath(), '-c', String(CONCURRENCY), '-d', String(duration), '-j', url]));
      uns.push(
        await externalLoad(api, [join(ROOT, 'bench/undici-load.ts'), '--url', url, '--connections', String(CONCURRENCY), '--seconds', String(duration)]),
      );
    }
    const own = median(
      acs.map((ac) => {
        try {
          return (JSON.parse(ac.stdout) as { requests: { average: number } }).requests.average;
        } catch {
          return Number.NaN;
        }
      }),
    );
    const daemonRate = median(daemons.map((d) => d.rate));
    const autocannonRate = median(acs.map((a) => a.rate));
    const delta = new Map<string, CommandStat>();
    for (const d of daemons) {
      for (const [k, v] of d.delta) {
        const cur = delta.get(k) ?? { calls: 0, usec: 0 };
        delta.set(k, { calls: cur.calls + v.calls, usec: cur.usec + v.usec });
      }
    }
    const polls = daemons.reduce((a, d) => a + d.polls, 0);
    const commits = daemons.reduce((a, d) => a + d.commits, 0);
    const cpu = {
      daemon: median(daemons.map((d) => d.cpu.daemon)),
      redis: median(daemons.map((d) => d.cpu.redis)),
      api: median(daemons.map((d) => d.cpu.api)),
    };
    const result: Throughput = {
      daemonRate,
      autocannonRate,
      autocannonOwnAverage: own,
      ratio: daemonRate / autocannonRate,
      windowS: SIZES.windowS,
      rounds: daemons.map((d, i) => ({ daemon: d.rate, autocannon: acs[i]?.rate ?? Number.NaN, undici: uns[i]?.rate ?? Number.NaN })),
      cpuDaemon: cpu,
      cpuAutocannon: { autocannon: median(acs.map((a) => a.cpu)), api: median(acs.map((a) => a.apiCpu)) },
      undiciRate: median(uns.map((u) => u.rate)),
      cpuUndici: { client: median(uns.map((u) => u.cpu)), api: median(uns.map((u) => u.apiCpu)) },
      daemonCpuUsPerPoll: median(daemons.map((d) => (d.cpu.daemon * 10_000) / d.rate)),
      redis: redisCost(delta, polls, commits),
    };
    const met = result.ratio >= 0.5;
    targets.push({ figure: 'Poll throughput vs autocannon', target: '≥ 50 %', value: `${(result.ratio * 100).toFixed(1)} %`, met });
    figure(
      'poll-throughput',
      `daemon ${fmt(daemonRate)} polls/s, autocannon ${fmt(autocannonRate)} req/s, ratio ${(result.ratio * 100).toFixed(1)} % (target ≥ 50 %: ${verdict(met)}); plain undici client ${fmt(result.undiciRate)} req/s`,
    );
    const rt = result.redis.topLevel / polls;
    const rtMet = rt <= 1;
    targets.push({ figure: 'Redis round trips per poll', target: '≤ 1', value: rt.toFixed(3), met: rtMet });
    figure(
      'redis-per-poll',
      `${rt.toFixed(3)} top-level round trips/poll (target ≤ 1: ${verdict(rtMet)}), ${(result.redis.total / polls).toFixed(2)} commands/poll incl. inside scripts`,
    );
    return result;
  } finally {
    await api.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Intake rate

interface Intake {
  n: number;
  lpushMs: number;
  firstToLastMs: number;
  spawnToLastMs: number;
  rate: number;
}

async function watchIntake(r: Redis, n: number, d: DaemonProcess, timeoutMs: number): Promise<{ first: number; last: number }> {
  let first = Number.NaN;
  const last = await waitFor(
    `${n} runs in the schedule`,
    async () => {
      const res = await r.pipeline().llen(KEYS.intake).zcard(KEYS.due).exec();
      const now = performance.now();
      const llen = Number(res?.[0]?.[1] ?? n);
      const zcard = Number(res?.[1]?.[1] ?? 0);
      if (Number.isNaN(first) && (llen < n || zcard > 0)) first = now;
      return zcard >= n && llen === 0 ? now : undefined;
    },
    timeoutMs,
    5,
    () => (d.child.exitCode !== null ? `daemon exited with ${d.child.exitCode}: ${d.logs()}` : undefined),
  );
  return { first, last };
}

async function benchIntake(redis: BenchRedis): Promise<Intake> {
  const r = redis.client;
  const api = await startApiServer(0);
  try {
    await reset(r);
    const n = SIZES.intakeN;
    const lpushMs = await pushIntake(r, n);
    const spawnAt = performance.now();
    const d = startDaemon({ redisUrl: redis.url, apiUrl: api.url, env: { WATCHER_CONCURRENCY: String(CONCURRENCY) }, config: {} });
    try {
      const { first, last } = await watchIntake(r, n, d, 120_000);
      const stop = await d.stop();
      if (stop.code !== 0) throw new Error(`daemon exited with ${stop.code}: ${d.logs()}`);
      const res: Intake = { n, lpushMs, firstToLastMs: last - first, spawnToLastMs: last - spawnAt, rate: (n * 1000) / (last - first) };
      const met = res.rate >= 20_000;
      targets.push({ figure: 'Intake rate', target: '≥ 20,000 runs/s', value: `${fmt(res.rate)} runs/s`, met });
      figure('intake-rate', `${fmt(n)} runs into the schedule in ${(res.firstToLastMs / 1000).toFixed(2)} s = ${fmt(res.rate)} runs/s (target ≥ 20,000: ${verdict(met)})`);
      return res;
    } finally {
      await d.stop();
    }
  } finally {
    await api.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// 4. Scale: memory per watched run, daemon RSS, claim cost

interface ClaimCost {
  size: number;
  medianMs: number;
  p90Ms: number;
  redisUsPerCall: number;
  claimed: number;
}

interface Scale {
  n: number;
  bytesPerRun: number;
  usedMemoryMB: number;
  intakeRate: number;
  intakeS: number;
  rssMaxMB: number;
  rssPeakMB: number;
  pollRate: number;
  claims: ClaimCost[];
  smallBytesPerRun: { size: number; bytes: number }[];
}

async function timeClaims(r: Redis, schedule: Schedule, size: number): Promise<ClaimCost> {
  if ((3 + SIZES.claimSamples) * 256 > size) throw new Error(`claim cost: ${size} runs cannot fill ${3 + SIZES.claimSamples} claims of 256`);
  for (let i = 0; i < 3; i++) await schedule.claim(256, LEASE_MS); // loads the script
  const before = await commandStats(r);
  const times: number[] = [];
  let claimed = Number.POSITIVE_INFINITY;
  for (let i = 0; i < SIZES.claimSamples; i++) {
    const t0 = performance.now();
    const res = await schedule.claim(256, LEASE_MS);
    times.push(performance.now() - t0);
    claimed = Math.min(claimed, res.claims.length);
  }
  const after = await commandStats(r);
  const ev = statDelta(before, after).get('evalsha') ?? { calls: 1, usec: Number.NaN };
  times.sort((a, b) => a - b);
  return { size, medianMs: percentile(times, 50), p90Ms: percentile(times, 90), redisUsPerCall: ev.usec / ev.calls, claimed };
}

async function benchScale(redis: BenchRedis): Promise<Scale> {
  const r = redis.client;
  const schedule = makeSchedule(r);
  const claims: ClaimCost[] = [];
  const smallBytesPerRun: Scale['smallBytesPerRun'] = [];
  for (const size of SIZES.claimSizes) {
    await reset(r);
    const base = await usedMemory(r);
    await fillViaIntake(r, schedule, size);
    smallBytesPerRun.push({ size, bytes: ((await usedMemory(r)) - base) / size });
    claims.push(await timeClaims(r, schedule, size));
  }

  const n = SIZES.scaleN;
  const api = await startApiServer(0);
  try {
    await reset(r);
    const base = await usedMemory(r);
    note(`scale: pushing ${fmt(n)} intake entries`);
    await pushIntake(r, n);
    const d = startDaemon({ redisUrl: redis.url, apiUrl: api.url, env: { WATCHER_CONCURRENCY: String(CONCURRENCY) }, config: {} });
    let result: Omit<Scale, 'claims' | 'smallBytesPerRun'>;
    try {
      const { first, last } = await watchIntake(r, n, d, 600_000);
      note(`scale: ${fmt(n)} runs watched; polling for ${SIZES.scalePollS} s`);
      let rssMax = 0;
      const s0 = await api.stats();
      const end = performance.now() + SIZES.scalePollS * 1000;
      while (performance.now() < end) {
        rssMax = Math.max(rssMax, rssOf(d.pid)?.rss ?? 0);
        await sleep(200);
      }
      const s1 = await api.stats();
      const peak = rssOf(d.pid)?.peak ?? Number.NaN;
      const used = await usedMemory(r);
      const zcard = await r.zcard(KEYS.due);
      if (zcard !== n) throw new Error(`scale: ${zcard} runs in the schedule, expected ${n}`);
      result = {
        n,
        bytesPerRun: (used - base) / n,
        usedMemoryMB: used / 1e6,
        intakeRate: (n * 1000) / (last - first),
        intakeS: (last - first) / 1000,
        rssMaxMB: (rssMax * 2 ** 20) / 1e6,
        rssPeakMB: (peak * 2 ** 20) / 1e6,
        pollRate: (s1.requests - s0.requests) / ((s1.t - s0.t) / 1000),
      };
      const stop = await d.stop();
      if (stop.code !== 0) throw new Error(`daemon exited with ${stop.code}: ${d.logs()}`);
    } finally {
      await d.stop();
    }
    claims.push(await timeClaims(r, schedule, n));
    const res: Scale = { ...result, claims, smallBytesPerRun };
    const memMet = res.bytesPerRun <= 512;
    const rssMet = res.rssMaxMB <= 200;
    targets.push({ figure: `Redis memory per watched run (${fmt(n)} watched)`, target: '≤ 512 B', value: `${fmt(res.bytesPerRun)} B`, met: memMet });
    targets.push({ figure: `Daemon RSS with ${fmt(n)} watched, polling`, target: '≤ 200 MB', value: `${res.rssMaxMB.toFixed(1)} MB`, met: rssMet });
    figure('redis-memory', `${fmt(res.bytesPerRun)} bytes of Redis used_memory per watched run at ${fmt(n)} watched (target ≤ 512: ${verdict(memMet)})`);
    figure('daemon-rss', `${res.rssMaxMB.toFixed(1)} MB RSS (max sampled) with ${fmt(n)} watched while polling at ${fmt(res.pollRate)} polls/s (target ≤ 200 MB: ${verdict(rssMet)})`);
    const firstClaim = claims[0];
    const lastClaim = claims[claims.length - 1];
    const growth = firstClaim && lastClaim ? lastClaim.redisUsPerCall / firstClaim.redisUsPerCall : Number.NaN;
    const flat = growth <= 2;
    const allFull = claims.every((c) => c.claimed === 256);
    targets.push({
      figure: `Claim of 256 due runs, ${claims.map((c) => fmt(c.size)).join(' / ')} watched`,
      target: 'flat',
      value: `${claims.map((c) => `${fmt(c.redisUsPerCall)} µs`).join(' / ')} in Redis (×${growth.toFixed(2)})`,
      met: flat && allFull,
    });
    figure(
      'claim-cost',
      `${claims.map((c) => `${fmt(c.size)} watched: ${c.medianMs.toFixed(2)} ms median round trip, ${fmt(c.redisUsPerCall)} µs in Redis`).join('; ')} (growth ×${growth.toFixed(2)}, flat: ${verdict(flat && allFull)})`,
    );
    figure('scale-intake', `${fmt(n)} runs into the schedule in ${res.intakeS.toFixed(1)} s = ${fmt(res.intakeRate)} runs/s while the daemon polls`);
    return res;
  } finally {
    await api.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// 5. Detection lag

interface LiveLag {
  scale: number;
  strategy: string;
  cadence: { initialMs: number; maxMs: number; factor: number; jitter: number };
  runs: number;
  live: LagSummary;
  predicted: LagSummary;
}

interface Lag {
  mc: MonteCarlo;
  live: LiveLag[];
}

async function liveLag(
  redis: BenchRedis,
  sim: Awaited<ReturnType<typeof startSimulator>>,
  strategy: string,
  cadence: LiveLag['cadence'],
  scale: number,
): Promise<LiveLag> {
  const r = redis.client;
  await reset(r);
  const d = startDaemon({
    redisUrl: redis.url,
    apiUrl: sim.url,
    env: {
      WATCHER_CONCURRENCY: String(CONCURRENCY),
      WATCHER_POLL_INITIAL_MS: String(cadence.initialMs),
      WATCHER_POLL_MAX_MS: String(cadence.maxMs),
      WATCHER_POLL_FACTOR: String(cadence.factor),
      WATCHER_POLL_JITTER: String(cadence.jitter),
    },
    // The intake check interval, scaled like the cadence, so the first poll comes as soon.
    config: { intake: { idleMs: Math.max(1, Math.round(100 / scale)) } },
  });
  try {
    await daemonReady(r, d);
    const n = SIZES.liveRuns;
    const durations = logUniform(n, 2000 / scale, 600_000 / scale, seeded(7));
    const starts = durations.map(() => Math.random() * SIZES.liveSpreadMs);
    const t0 = performance.now();
    await Promise.all(
      durations.map(async (duration, i) => {
        await sleep(Math.max(0, t0 + (starts[i] ?? 0) - performance.now()));
        const run = sim.createRun({ durationMs: duration, outcome: 'completed' });
        await r.lpush(KEYS.intake, run.id);
      }),
    );
    await waitFor(
      `${n} events`,
      async () => (await r.xlen(KEYS.events)) >= n,
      SIZES.liveSpreadMs + 600_000 / scale + 30_000,
      20,
      () => (d.child.exitCode !== null ? `daemon exited with ${d.child.exitCode}: ${d.logs()}` : undefined),
    );
    const entries = await r.xrange(KEYS.events, '-', '+');
    const samples = entries.map(([, fields]) => {
      const ev = JSON.parse(fields[1] ?? '{}') as WatchEvent;
      const end = parseLettaTime(ev.data.run?.completed_at) ?? Number.NaN;
      const lag = Date.parse(ev.data.watch.detected_at) - end;
      return { duration: 0, lag, calls: sim.pollsOf(ev.data.run_id) };
    });
    if (samples.some((s) => !Number.isFinite(s.lag))) throw new Error('live lag: an event without completed_at');
    const stop = await d.stop();
    if (stop.code !== 0) throw new Error(`daemon exited with ${stop.code}: ${d.logs()}`);
    const predicted = summarize('Monte Carlo, same runs', simulateCadence(durations, cadence, seeded(11)));
    return { scale, strategy, cadence, runs: n, live: summarize('live', samples), predicted };
  } finally {
    await d.stop();
  }
}

async function benchLag(redis: BenchRedis): Promise<Lag> {
  const mc = monteCarlo(SIZES.mcN, 2000, 600_000, DEFAULT_CADENCE);
  const [e, f, p] = mc.rows;
  if (!e || !f || !p) throw new Error('lag: Monte Carlo gave no rows');
  const s = SIZES.liveScale;
  const sim = await startSimulator({ port: 0 });
  const live: LiveLag[] = [];
  try {
    const scaled = {
      initialMs: Math.max(1, Math.round(DEFAULT_CADENCE.initialMs / s)),
      maxMs: Math.max(1, Math.round(DEFAULT_CADENCE.maxMs / s)),
      factor: DEFAULT_CADENCE.factor,
      jitter: DEFAULT_CADENCE.jitter,
    };
    live.push(await liveLag(redis, sim, 'default cadence', scaled, s));
    live.push(await liveLag(redis, sim, 'fixed, same mean calls', fixed(Math.max(1, Math.round(mc.equalCallsIntervalMs / s))), s));
  } finally {
    await sim.close();
  }
  const sec = (ms: number) => (ms / 1000).toFixed(2);
  figure(
    'detection-lag',
    `default cadence p50 ${sec(e.p50)} s, p99 ${sec(e.p99)} s, ${e.meanCalls.toFixed(2)} calls/run; fixed ${sec(mc.equalCallsIntervalMs)} s interval (same calls) p50 ${sec(f.p50)} s, p99 ${sec(f.p99)} s; same p99 by fixed interval costs ${p.meanCalls.toFixed(1)} calls/run`,
  );
  const [le, lf] = live;
  if (le && lf) {
    figure(
      'detection-lag-live',
      `1/${s} time scale, ${le.runs} runs: default cadence p50 ${le.live.p50.toFixed(0)} ms (predicted ${le.predicted.p50.toFixed(0)}), p99 ${le.live.p99.toFixed(0)} ms (predicted ${le.predicted.p99.toFixed(0)}), ${le.live.meanCalls.toFixed(2)} calls/run (predicted ${le.predicted.meanCalls.toFixed(2)}); fixed p50 ${lf.live.p50.toFixed(0)} ms (predicted ${lf.predicted.p50.toFixed(0)}), p99 ${lf.live.p99.toFixed(0)} ms (predicted ${lf.predicted.p99.toFixed(0)}), ${lf.live.meanCalls.toFixed(2)} calls/run`,
    );
  }
  return { mc, live };
}

// ---------------------------------------------------------------------------------------------
// 6. Shutdown with runs in flight

interface Shutdown {
  scenario: string;
  latencyMs: number;
  graceMs: number;
  runs: number;
  inFlightAtSignal: number;
  rampMs: number;
  exitMs: number;
  exitCode: number | null;
  inSchedule: number;
  stillLeased: number;
  dueNow: number;
  events: number;
  dead: number;
  allBack: boolean;
  /** Exit code when the daemon died before the SIGTERM (e.g. out of memory). */
  diedEarly: number | null | undefined;
}

async function benchShutdown(redis: BenchRedis, scenario: string, latencyMs: number, graceMs: number): Promise<Shutdown> {
  const r = redis.client;
  const n = SIZES.shutdownN;
  const schedule = makeSchedule(r);
  const api = await startApiServer(latencyMs);
  try {
    await reset(r);
    await fillViaIntake(r, schedule, n);
    const d = startDaemon({
      redisUrl: redis.url,
      apiUrl: api.url,
      env: { WATCHER_CONCURRENCY: String(Math.min(10_000, n)), WATCHER_SHUTDOWN_GRACE_MS: String(graceMs) },
      config: {},
    });
    try {
      const t0 = performance.now();
      await daemonReady(r, d);
      let inflight = 0;
      await waitFor(
        `${n} requests in flight`,
        async () => {
          inflight = (await api.stats()).inflight;
          return inflight >= n;
        },
        Math.max(5_000, latencyMs - 500),
        50,
        () => (d.child.exitCode !== null ? `daemon exited with ${d.child.exitCode}: ${d.logs()}` : undefined),
      ).catch(() => undefined);
      const rampMs = performance.now() - t0;
      inflight = (await api.stats()).inflight;
      const diedEarly = d.child.exitCode !== null || d.child.signalCode !== null ? d.child.exitCode : undefined;
      if (diedEarly !== undefined) note(`shutdown (${scenario}): the daemon died before SIGTERM (exit ${diedEarly}, signal ${d.child.signalCode}): ${d.logs().slice(-1500)}`);
      const stop = await d.stop(graceMs + 60_000);
      const now = await redisNow(r);
      const [inSchedule, stillLeased, dueNow, events, dead] = await Promise.all([
        r.zcard(KEYS.due),
        r.zcount(KEYS.due, now + LEASE_MS / 4, '+inf'),
        r.zcount(KEYS.due, '-inf', now),
        r.xlen(KEYS.events),
        r.llen(KEYS.dead),
      ]);
      return {
        scenario,
        latencyMs,
        graceMs,
        runs: n,
        inFlightAtSignal: inflight,
        rampMs,
        exitMs: stop.ms,
        exitCode: stop.code,
        inSchedule,
        stillLeased,
        dueNow,
        events,
        dead,
        allBack: diedEarly === undefined && stop.code === 0 && inSchedule === n && stillLeased === 0 && events === 0 && dead === 0,
        diedEarly,
      };
    } finally {
      await d.stop();
    }
  } finally {
    await api.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// CPU profile of the daemon at steady state (separate from the measured runs)

async function profileDaemon(redis: BenchRedis): Promise<{ summary: ProfileSummary; rate: number } | undefined> {
  const r = redis.client;
  const schedule = makeSchedule(r);
  const api = await startApiServer(0);
  const dir = tempDir('lrw-bench-prof-');
  try {
    await reset(r);
    await fillViaIntake(r, schedule, SIZES.throughputRuns);
    const d = startDaemon({
      redisUrl: redis.url,
      apiUrl: api.url,
      env: { WATCHER_POLL_INITIAL_MS: '1', WATCHER_POLL_MAX_MS: '1', WATCHER_POLL_JITTER: '0', WATCHER_CONCURRENCY: String(CONCURRENCY) },
      config: {},
      nodeArgs: ['--cpu-prof', '--cpu-prof-dir', dir],
    });
    let rate = Number.NaN;
    try {
      await daemonReady(r, d);
      await sleep(2000);
      const s0 = await api.stats();
      await sleep(SIZES.profileS * 1000);
      const s1 = await api.stats();
      rate = (s1.requests - s0.requests) / ((s1.t - s0.t) / 1000);
      await d.stop();
    } finally {
      await d.stop();
    }
    const file = latestProfile(dir);
    if (!file) return undefined;
    return { summary: summarizeProfile(file), rate };
  } finally {
    await api.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// Report

/** Which code was measured: the commit, and any uncommitted changes under src/ (read-only git). */
function codeVersion(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'config', 'package.json'], { cwd: ROOT, encoding: 'utf8' })
      .split('\n')
      .map((l) => l.slice(3).trim())
      .filter(Boolean);
    return dirty.length === 0 ? `commit ${head}` : `commit ${head} + uncommitted changes in ${dirty.join(', ')}`;
  } catch {
    return 'unknown (not a git checkout)';
  }
}

interface All {
  code: string;
  machine: Machine;
  load: [number, number];
  throughput: Throughput;
  intake: Intake;
  scale: Scale;
  lag: Lag;
  shutdown: Shutdown[];
  profile: { summary: ProfileSummary; rate: number } | undefined;
  cluster: ClusterBench | undefined;
  detection: Detection | undefined;
  idle: Idle | undefined;
  seconds: number;
}

function report(a: All): string {
  const m = a.machine;
  const t = a.throughput;
  const rc = t.redis;
  const sec = (ms: number) => (ms / 1000).toFixed(2);
  const lines: string[] = [];
  const p = (...xs: string[]) => lines.push(...xs);
  p(
    '# Benchmarks',
    '',
    `Generated by \`npm run bench\` (bench/run.ts) on ${m.date}; the whole run took ${(a.seconds / 60).toFixed(1)} min. Every figure below comes from this one run:`,
    'these machines are noisy, so compare ratios measured together rather than absolute numbers across runs.',
    '',
    '## Machine',
    '',
    '| | |',
    '|---|---|',
    `| CPU | ${m.cpu}, ${m.cores} cores |`,
    `| RAM | ${m.ramGiB.toFixed(1)} GiB |`,
    `| Kernel | Linux ${m.kernel} |`,
    `| Node.js | ${m.node} |`,
    `| Redis | ${m.redis} (private server on a free port: no persistence, \`noeviction\`) |`,
    `| Code measured | ${a.code} |`,
    `| Daemon command | \`node ${[...DAEMON_NODE_ARGS, 'dist/main.js', 'run'].join(' ')}\`${DAEMON_NODE_ARGS.length === 0 ? ` (it re-executes itself with \`${imageNodeFlags().join(' ')}\`, the image's flags); memory is read over its process tree` : ''} |`,
    `| Load average (1 min) | ${a.load[0].toFixed(2)} at start, ${a.load[1].toFixed(2)} at end |`,
    '',
    'Redis, the API stub, the daemon and the load generator all share these cores, and so does whatever else runs on the machine (a load average above ~0.5 at the start means some did).',
    '',
    '## Targets',
    '',
    '| figure | target | measured | met |',
    '|---|---|---|---|',
    ...targets.map((x) => `| ${x.figure} | ${x.target} | ${x.value} | ${x.met === undefined ? 'n/a' : x.met ? 'yes' : '**no**'} |`),
    '',
    '## 1. Poll throughput',
    '',
    `The API is \`bench/api-server.ts\`, a plain \`node:http\` server in its own process that answers every \`GET /v1/runs/{id}\` with one fixed \`running\` Run, so runs never finish. ` +
      `The daemon runs as \`node dist/main.js run\` with \`WATCHER_CONCURRENCY=${CONCURRENCY}\`, \`WATCHER_POLL_INITIAL_MS=1\`, \`WATCHER_POLL_MAX_MS=1\`, \`WATCHER_POLL_JITTER=0\`, \`WATCHER_HTTP_PORT=0\`, \`WATCHER_LOG_LEVEL=warn\` and an empty config file, ` +
      `over ${fmt(SIZES.throughputRuns)} watched runs (each due again 1 ms after its poll, so the daemon is never short of work). ` +
      `After ${SIZES.warmupS} s of warm-up the server's request counter is read at the start and end of a ${SIZES.windowS} s window (the server's own clock). ` +
      `Then autocannon hits the same server with the same ${CONCURRENCY} connections (pipelining 1), measured the same way; ` +
      'last, as a reference, the daemon\'s HTTP stack alone (undici\'s `dispatch` through a keep-alive Agent, `JSON.parse` of each body, nothing else). ' +
      `There are ${SIZES.throughputRounds} such rounds (daemon, autocannon, reference, one after the other) so a burst of other load hits all three alike; the table gives the medians. ` +
      'CPU is read from /proc/<pid>/stat over the same windows.',
    '',
    '| | requests/s | CPU (% of one core) |',
    '|---|---:|---|',
    `| daemon | ${fmt(t.daemonRate)} | daemon ${t.cpuDaemon.daemon.toFixed(0)} %, Redis ${t.cpuDaemon.redis.toFixed(0)} %, API stub ${t.cpuDaemon.api.toFixed(0)} % |`,
    `| autocannon | ${fmt(t.autocannonRate)} (its own average: ${fmt(t.autocannonOwnAverage)}) | autocannon ${t.cpuAutocannon.autocannon.toFixed(0)} %, API stub ${t.cpuAutocannon.api.toFixed(0)} % |`,
    `| reference: undici dispatch + JSON.parse alone (bench/undici-load.ts) | ${fmt(t.undiciRate)} (${((t.undiciRate / t.autocannonRate) * 100).toFixed(1)} % of autocannon) | client ${t.cpuUndici.client.toFixed(0)} %, API stub ${t.cpuUndici.api.toFixed(0)} % |`,
    `| **ratio** | **${(t.ratio * 100).toFixed(1)} %** | |`,
    '',
    ...budget(t),
    '',
    `Rounds (requests/s, daemon / autocannon / undici alone): ${t.rounds.map((x) => `${fmt(x.daemon)} / ${fmt(x.autocannon)} / ${fmt(x.undici)} (${((x.daemon / x.autocannon) * 100).toFixed(1)} %)`).join('; ')}.`,
    '',
    '## 2. Redis cost per poll',
    '',
    `\`INFO commandstats\` deltas over the same daemon windows (${SIZES.throughputRounds} × ${SIZES.windowS} s), divided by the polls the server counted in them (${fmt(rc.polls)}). ` +
      'commandstats also counts the commands a Lua script calls, which cost no round trip. They are separated by name: ' +
      'EVALSHA/EVAL and any command that none of the daemon\'s scripts calls (the `redis.call` names read from src/redis/lua/) are top-level; ' +
      `HGET is both (inside the scripts, and the poller's \`entryOf\` at most once per committed event), so top-level HGET is counted as one per event committed in the window, an upper bound (${rc.commits} here: these runs never finish). ` +
      'The bench\'s own INFO calls are left out.',
    '',
    `- **top-level round trips per poll: ${(rc.topLevel / rc.polls).toFixed(3)}** (target ≤ 1)`,
    `- all commands per poll, including those inside scripts: ${(rc.total / rc.polls).toFixed(2)}`,
    `- Redis time in scripts per poll: ${rc.evalshaUsPerPoll.toFixed(1)} µs`,
    `- derived: ${fmt(rc.claims)} claims (${(rc.polls / Math.max(1, rc.claims)).toFixed(1)} polls each), ${fmt(rc.settles)} settle batches (${(rc.polls / Math.max(1, rc.settles)).toFixed(1)} polls each), ${fmt(rc.idleLoops)} idle intake/outbox checks ` +
      '(claims = ZRANGE calls, which only the claim script makes; idle checks = RPOP calls of the intake script plus the outbox claim\'s ZRANGEBYSCORE; settles = the remaining script calls)',
    '',
    '| command | calls | per poll | counted as |',
    '|---|---:|---:|---|',
    ...rc.perCommand.map((c) => `| ${c.name} | ${fmt(c.calls)} | ${c.perPoll.toFixed(3)} | ${c.kind} |`),
    '',
    '## 3. Intake rate',
    '',
    `${fmt(a.intake.n)} bare run IDs (\`run-<uuid>\`) LPUSHed, pipelined (1,000 per LPUSH, ${fmt(a.intake.lpushMs)} ms in all), before the daemon starts (default cadence, concurrency ${CONCURRENCY}, the never-finishing API, so it also polls the new runs while taking them in). ` +
      'LLEN/ZCARD are sampled every 5 ms: the time runs from the first entry leaving the list to the last one in `P:due`.',
    '',
    `- **${fmt(a.intake.rate)} runs/s** (${(a.intake.firstToLastMs / 1000).toFixed(2)} s; ${(a.intake.spawnToLastMs / 1000).toFixed(2)} s counting the daemon's start-up)`,
    `- at ${fmt(a.scale.n)} entries (section 4): ${fmt(a.scale.intakeRate)} runs/s (${a.scale.intakeS.toFixed(1)} s)`,
    '',
    '## 4. Scale',
    '',
    `${fmt(a.scale.n)} bare run IDs go in through the intake path (LPUSH, then the daemon's intake script), and the daemon polls them at the default cadence with concurrency ${CONCURRENCY} for ${SIZES.scalePollS} s. ` +
      'Memory per run = (`used_memory` now − `used_memory` after FLUSHALL) / runs, with the intake list empty and no events. ' +
      `Daemon RSS is sampled from /proc every 200 ms while it polls (${fmt(a.scale.pollRate)} polls/s).`,
    '',
    `- **Redis memory: ${fmt(a.scale.bytesPerRun)} bytes per watched run** (used_memory ${a.scale.usedMemoryMB.toFixed(0)} MB); at smaller sizes: ${a.scale.smallBytesPerRun.map((s) => `${fmt(s.size)}: ${fmt(s.bytes)} B`).join(', ')}`,
    `- **daemon RSS: ${a.scale.rssMaxMB.toFixed(1)} MB** (max sampled while polling; peak VmHWM since start ${a.scale.rssPeakMB.toFixed(1)} MB)`,
    '',
    `Claim cost: \`makeSchedule(...).claim(256, ${LEASE_MS})\` from the bench, ${SIZES.claimSamples} calls after 3 warm-up calls, each finding 256 due runs. ` +
      `At ${SIZES.claimSizes.map((n) => fmt(n)).join(' and ')} the schedule is filled by the intake script alone; at ${fmt(a.scale.n)} it is the daemon's schedule above, claimed after the daemon stopped. ` +
      'Redis time per call is the EVALSHA `usec` delta in commandstats.',
    '',
    '| watched runs | round trip, median | round trip, p90 | time in Redis per claim | runs per claim |',
    '|---:|---:|---:|---:|---:|',
    ...a.scale.claims.map((c) => `| ${fmt(c.size)} | ${c.medianMs.toFixed(2)} ms | ${c.p90Ms.toFixed(2)} ms | ${fmt(c.redisUsPerCall)} µs | ${c.claimed} |`),
    '',
    '## 5. Detection lag',
    '',
    `Monte Carlo over \`nextPollDelay\` (src/cadence.ts) with ${fmt(a.lag.mc.n)} runs whose durations are log-uniform from 2 s to 10 min. A run is enqueued as it starts and polled at once, ` +
      'then after poll k at `nextPollDelay(k)`; it is detected by the first poll at or after its end. Lag = that poll − the end; calls = polls made. ' +
      'Request and Redis time are left out (the live check below includes them). The fixed-interval rows use the same function with factor 1 and no jitter; ' +
      'the first one is the interval that makes the same mean number of calls per run as the default cadence, the second the interval that reaches the same p99 lag.',
    '',
    '| strategy | lag p50 | lag p90 | lag p99 | mean lag | API calls per run |',
    '|---|---:|---:|---:|---:|---:|',
    ...a.lag.mc.rows.map((r) => `| ${r.label} | ${sec(r.p50)} s | ${sec(r.p90)} s | ${sec(r.p99)} s | ${sec(r.meanLag)} s | ${r.meanCalls.toFixed(2)} |`),
    '',
    '![Detection lag against run duration](bench/lag.svg)',
    '',
    `Live check: the daemon against the simulator (tools/simulator) at 1/${SIZES.liveScale} of real time (durations ${(2000 / SIZES.liveScale).toFixed(0)} ms–${(600_000 / SIZES.liveScale / 1000).toFixed(1)} s, cadence and intake check interval scaled alike), ` +
      `${SIZES.liveRuns} runs started over ${SIZES.liveSpreadMs} ms; lag = the event's \`detected_at\` − the Run's \`completed_at\`, calls = requests the simulator saw for the run. ` +
      'Predicted = the Monte Carlo on the same durations and cadence. Figures are in scaled milliseconds.',
    '',
    '| strategy (scaled) | lag p50 live / predicted | lag p99 live / predicted | calls per run live / predicted |',
    '|---|---:|---:|---:|',
    ...a.lag.live.map(
      (l) =>
        `| ${l.strategy}: ${l.cadence.factor === 1 ? `every ${l.cadence.initialMs} ms` : `${l.cadence.initialMs} ms ×${l.cadence.factor} up to ${l.cadence.maxMs} ms, ±${l.cadence.jitter * 100} %`} | ${l.live.p50.toFixed(0)} / ${l.predicted.p50.toFixed(0)} ms | ${l.live.p99.toFixed(0)} / ${l.predicted.p99.toFixed(0)} ms | ${l.live.meanCalls.toFixed(2)} / ${l.predicted.meanCalls.toFixed(2)} |`,
    ),
    '',
    'The live lag runs a little above the prediction by the fixed costs the model leaves out: the intake check interval before the first poll, the claim loop\'s 5 ms minimum wait, and the request and Redis round trips.',
    '',
    '## 6. Shutdown with runs in flight',
    '',
    `${fmt(SIZES.shutdownN)} runs watched, \`WATCHER_CONCURRENCY=${Math.min(10_000, SIZES.shutdownN)}\`, and the API stub holds every answer for a fixed latency, so all of them are in flight when SIGTERM arrives. ` +
      'Exit time runs from the signal to the process exit. Afterwards every run must still be in `P:due` with no lease left on it (score < Redis now + lease/4), ' +
      'no event committed and nothing dead-lettered.',
    '',
    '| scenario | API latency | grace | in flight at SIGTERM (after) | SIGTERM → exit | exit code | in schedule | still leased | due now | all back |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---|',
    ...a.shutdown.map(
      (s) =>
        `| ${s.scenario} | ${sec(s.latencyMs)} s | ${sec(s.graceMs)} s | ${fmt(s.inFlightAtSignal)} (${sec(s.rampMs)} s after start) | **${sec(s.exitMs)} s** | ${s.exitCode} | ${fmt(s.inSchedule)} | ${fmt(s.stillLeased)} | ${fmt(s.dueNow)} | ${s.allBack ? 'yes' : '**no**'} |`,
    ),
    '',
    '"drain": answers come within the grace period, so the polls finish and their runs are rescheduled normally (due ≈ 1 s later). ' +
      '"hand back": answers would come long after the grace period, so the polls are aborted when it runs out and their runs handed back due at once; exit time − grace is the hand-back cost.',
    '',
  );
  if (a.detection) p(...detectionMarkdown(a.detection));
  if (a.idle) p(...idleMarkdown(a.idle));
  if (a.cluster) p(...clusterMarkdown(a.cluster));
  if (a.profile) {
    p(
      '## CPU profile of the daemon',
      '',
      `A separate run after the measurements (\`node --cpu-prof\`, same set-up as section 1, ${SIZES.profileS} s after 2 s of warm-up, ${fmt(a.profile.rate)} polls/s under the profiler).`,
      '',
      profileMarkdown(a.profile.summary),
      '',
    );
  }
  // What was changed after profiling, and what each change gained: kept by hand in
  // bench/changes.md (figures from the runs that measured them), carried into every report.
  p(readFileSync(new URL('./changes.md', import.meta.url), 'utf8').trim(), '');
  p(
    '## Reproduce',
    '',
    '```sh',
    'npm ci',
    'npm run bench                     # about ' + Math.ceil(a.seconds / 60) + ' min; writes BENCHMARKS.md and bench/lag.svg',
    'node bench/run.ts --smoke         # every benchmark at tiny sizes, < 60 s, writes nothing',
    'node bench/run.ts --no-profile    # skip the CPU profile',
    'node bench/run.ts --only=throughput,scale     # some sections only (writes nothing)',
    'node bench/run.ts --node-args="--max-semi-space-size=2"   # node flags for the daemon',
    '```',
    '',
  );
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  installCleanupHandlers();
  setDaemonNodeArgs(DAEMON_NODE_ARGS);
  const started = performance.now();
  const loadAtStart = loadavg()[0] ?? Number.NaN;
  const code = codeVersion();
  note(SMOKE ? 'smoke mode: tiny sizes, BENCHMARKS.md is not written' : 'full run');
  if (DAEMON_NODE_ARGS.length > 0) note(`daemon node flags: ${DAEMON_NODE_ARGS.join(' ')}`);
  note('building dist/ (the daemon runs as node dist/main.js, as in the image)');
  buildDaemon();
  const redis = await startRedis();
  const redisPid = Number(/process_id:(\d+)/.exec(await redis.client.info('server'))?.[1] ?? 0);
  try {
    const m = machine(redis.version);
    let throughput: Throughput | undefined;
    let intake: Intake | undefined;
    let scale: Scale | undefined;
    let lag: Lag | undefined;
    let shutdown: Shutdown[] | undefined;
    if (want('throughput')) {
      note('1-2. poll throughput and Redis cost per poll');
      throughput = await benchThroughput(redis, redisPid);
      if (ONLY) {
        const t = throughput;
        const c = t.cpuDaemon;
        note(`CPU % while the daemon ran: daemon ${c.daemon.toFixed(0)}, Redis ${c.redis.toFixed(0)}, API stub ${c.api.toFixed(0)}; rounds (daemon/autocannon/undici) ${t.rounds.map((x) => `${fmt(x.daemon)}/${fmt(x.autocannon)}/${fmt(x.undici)}`).join(' ')}`);
        for (const line of budget(t)) if (line) note(line);
      }
    }
    if (want('intake')) {
      note('3. intake rate');
      intake = await benchIntake(redis);
    }
    if (want('scale')) {
      note('4. scale');
      scale = await benchScale(redis);
    }
    if (want('lag')) {
      note('5. detection lag');
      lag = await benchLag(redis);
    }
    if (want('shutdown')) {
      note('6. shutdown');
      shutdown = [
        await benchShutdown(redis, 'drain', SIZES.drainLatencyMs, 10_000),
        await benchShutdown(redis, 'hand back', SIZES.handBackLatencyMs, SIZES.handBackGraceMs),
      ];
      const allBack = shutdown.every((s) => s.allBack);
      for (const s of shutdown) {
        targets.push({
          figure: `Shutdown (${s.scenario}) with ${fmt(s.inFlightAtSignal)} in flight: all handed back`,
          target: 'every run back, exit 0',
          value: `${(s.exitMs / 1000).toFixed(2)} s to exit, ${fmt(s.inSchedule)}/${fmt(s.runs)} back, ${fmt(s.stillLeased)} leased`,
          met: s.allBack,
        });
      }
      figure(
        'shutdown',
        shutdown
          .map((s) => `${s.scenario}: ${s.diedEarly !== undefined ? `DAEMON DIED BEFORE SIGTERM (exit ${s.diedEarly}), ` : ''}${fmt(s.inFlightAtSignal)} in flight, SIGTERM → exit ${(s.exitMs / 1000).toFixed(2)} s (grace ${(s.graceMs / 1000).toFixed(1)} s), ${fmt(s.inSchedule)}/${fmt(s.runs)} back in schedule, ${fmt(s.stillLeased)} still leased`)
          .join('; ') + ` (all handed back: ${verdict(allBack)})`,
      );
    }
    let detection: Detection | undefined;
    if (want('detection')) {
      note('5b. detection at real time, five strategies');
      detection = await benchDetection({ redis, runs: SIZES.detectRuns, minMs: SIZES.detectMinMs, maxMs: SIZES.detectMaxMs, listLagMs: DETECT_LIST_LAG_MS, seed: 12 });
      const def = detection.results.find((r) => r.name.startsWith('default'));
      if (def) {
        const met = def.p99Ms <= 3000 && def.requestsPerRun <= 3;
        targets.push({ figure: 'Detection, default settings: p99 lag and API requests per run', target: '≤ 3 s, ≤ 3', value: `${(def.p99Ms / 1000).toFixed(2)} s, ${def.requestsPerRun.toFixed(2)}`, met });
        targets.push({ figure: 'Detection with callbacks (20 % dropped): p50 lag', target: '≤ 0.5 s', value: `${(def.p50Ms / 1000).toFixed(2)} s`, met: def.p50Ms <= 500 });
      }
      figure(
        'detection-strategies',
        detection.results.map((r) => `${r.name}: p50 ${(r.p50Ms / 1000).toFixed(2)} s, p99 ${(r.p99Ms / 1000).toFixed(2)} s, ${r.requestsPerRun.toFixed(2)} req/run, ${fmt(r.bytesPerRun)} B/run`).join('; '),
      );
    }
    let idle: Idle | undefined;
    if (want('idle')) {
      note('8. an idle replica');
      idle = await benchIdle({ redis, seconds: SIZES.idleS });
      targets.push({ figure: 'Idle replica: Redis commands per second', target: '≤ 2', value: idle.commandsPerSecond.toFixed(2), met: idle.commandsPerSecond <= 2 });
      targets.push({ figure: 'Idle replica: intake latency', target: '< 100 ms', value: `${idle.intakeLatencyMs.toFixed(0)} ms`, met: idle.intakeLatencyMs < 100 });
      figure('idle', `${idle.commandsPerSecond.toFixed(2)} Redis commands/s while idle (${idle.byCommand.map(([c, n]) => `${c} ${n}`).join(', ')}); an entry pushed then taken in ${idle.intakeLatencyMs.toFixed(0)} ms`);
    }
    let cluster: ClusterBench | undefined;
    if (want('cluster')) {
      note('7. Redis Cluster');
      cluster = await benchCluster({ standalone: redis, partitions: CLUSTER_PARTITIONS, runs: SIZES.clusterRuns, warmupS: SIZES.clusterWarmupS, windowS: SIZES.clusterWindowS });
      const met = cluster.busiestShare <= 0.45;
      targets.push({ figure: `Redis Cluster, 3 masters, ${CLUSTER_PARTITIONS} partitions: commands on the busiest master`, target: '≤ 45 %', value: `${(100 * cluster.busiestShare).toFixed(1)} %`, met });
      figure(
        'cluster',
        `busiest master ${(100 * cluster.busiestShare).toFixed(1)} % of commands (${cluster.masters.map((m) => fmt(m.commands)).join(' / ')}); ${fmt(cluster.pollsPerSecond.cluster)} polls/s on the cluster vs ${fmt(cluster.pollsPerSecond.standalone)} standalone (${verdict(met)})`,
      );
    }
    let profile: All['profile'];
    if (PROFILE) {
      note('CPU profile of the daemon');
      profile = await profileDaemon(redis);
      if (profile) {
        const topArea = profile.summary.areas[0];
        figure('profile', `${fmt(profile.rate)} polls/s under the profiler; largest self-time area ${topArea ? `${topArea.name} ${topArea.pct.toFixed(1)} %` : 'n/a'}`);
        // With --only nothing is written, so show the breakdown here.
        if (ONLY) process.stderr.write(`${profileMarkdown(profile.summary)}\n`);
      }
    }
    const seconds = (performance.now() - started) / 1000;
    if (!SMOKE && throughput && intake && scale && lag && shutdown) {
      writeFileSync(join(ROOT, 'bench/lag.svg'), lagSvg(lag.mc));
      if (detection) writeFileSync(join(ROOT, 'bench/detection.svg'), detectionSvg(detection));
      writeFileSync(join(ROOT, 'BENCHMARKS.md'), report({ code, machine: m, load: [loadAtStart, loadavg()[0] ?? Number.NaN], throughput, intake, scale, lag, shutdown, profile, cluster, detection, idle, seconds }));
      note('wrote BENCHMARKS.md and bench/lag.svg');
    } else {
      if (lag) lagSvg(lag.mc); // exercise the charts too
      if (detection) detectionSvg(detection);
      note('not writing BENCHMARKS.md (--smoke or --only)');
    }
    note(`done in ${seconds.toFixed(1)} s`);
    return 0;
  } finally {
    await redis.stop();
  }
}

main().then(
  (code) => {
    cleanupNow();
    process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
    cleanupNow();
    process.exit(1);
  },
);
