import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CONCURRENCY, KEYS } from '../config.ts';
import { verdict } from '../output.ts';
import { fillViaIntake, makeSchedule, reset } from '../schedule.ts';
import {
  NODE,
  ROOT,
  commandStats,
  cpuMs,
  daemonReady,
  fmt,
  median,
  scriptInternalCommands,
  startApiServer,
  startDaemon,
  statDelta,
  track,
  type ApiServer,
  type BenchRedis,
  type CommandStat,
} from '../support.ts';
import type { BenchContext, Outcome, RedisCost, Sizes, Throughput } from '../types.ts';

/**
 * 1 + 2. Poll throughput and Redis cost per poll: the daemon polling flat out against the API
 * stub, next to autocannon and a plain undici client on the same server, in alternating rounds;
 * INFO commandstats over the daemon's windows.
 */

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
  return {
    polls,
    commits,
    topLevel,
    total,
    perCommand,
    scriptCalls: calls('evalsha') + calls('eval'),
    evalshaUsPerPoll: ((delta.get('evalsha')?.usec ?? 0) + (delta.get('eval')?.usec ?? 0)) / polls,
  };
}

function autocannonPath(): string {
  return createRequire(import.meta.url).resolve('autocannon');
}

interface LoadRound {
  rate: number;
  cpu: number;
  apiCpu: number;
  stdout: string;
}

/** Runs a load generator (a node script) against the API stub; its rate over the same window. */
async function externalLoad(sizes: Sizes, api: ApiServer, argv: string[]): Promise<LoadRound> {
  const child = track(spawn(NODE, argv, { stdio: ['ignore', 'pipe', 'pipe'] }));
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr?.on('data', (c: Buffer) => (stderr = (stderr + c.toString('utf8')).slice(-4000)));
  const done = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  await sleep(sizes.warmupS * 1000);
  const c0 = { client: cpuMs(child.pid ?? 0), api: cpuMs(api.pid) };
  const s0 = await api.stats();
  await sleep(sizes.windowS * 1000);
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

async function daemonRound(sizes: Sizes, redis: BenchRedis, redisPid: number, api: ApiServer): Promise<DaemonRound> {
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
    await sleep(sizes.warmupS * 1000);
    const cpu0 = { daemon: cpuMs(d.pid), redis: cpuMs(redisPid), api: cpuMs(api.pid) };
    const [s0, c0, x0] = await Promise.all([api.stats(), commandStats(r), r.xlen(KEYS.events)]);
    await sleep(sizes.windowS * 1000);
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

export async function benchThroughput({ redis, redisPid, sizes }: BenchContext): Promise<Throughput> {
  const r = redis.client;
  const schedule = makeSchedule(r);
  const api = await startApiServer(0);
  try {
    await reset(r);
    await fillViaIntake(r, schedule, sizes.throughputRuns);
    // The same server, the same 32 connections: the daemon, a plain load generator
    // (autocannon), and the daemon's HTTP stack alone (undici dispatch + JSON.parse) as a reference.
    // Rounds alternate so a burst of other load on the machine hits all three alike.
    const url = `${api.url}/v1/runs/run-00000000-0000-4000-8000-000000000000`;
    const duration = sizes.warmupS + sizes.windowS + 2;
    const daemons: DaemonRound[] = [];
    const acs: LoadRound[] = [];
    const uns: LoadRound[] = [];
    for (let round = 0; round < sizes.throughputRounds; round++) {
      daemons.push(await daemonRound(sizes, redis, redisPid, api));
      acs.push(await externalLoad(sizes, api, [autocannonPath(), '-c', String(CONCURRENCY), '-d', String(duration), '-j', url]));
      uns.push(
        await externalLoad(sizes, api, [join(ROOT, 'bench/undici-load.ts'), '--url', url, '--connections', String(CONCURRENCY), '--seconds', String(duration)]),
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
    return {
      daemonRate,
      autocannonRate,
      autocannonOwnAverage: own,
      ratio: daemonRate / autocannonRate,
      windowS: sizes.windowS,
      rounds: daemons.map((d, i) => ({ daemon: d.rate, autocannon: acs[i]?.rate ?? Number.NaN, undici: uns[i]?.rate ?? Number.NaN })),
      cpuDaemon: cpu,
      cpuAutocannon: { autocannon: median(acs.map((a) => a.cpu)), api: median(acs.map((a) => a.apiCpu)) },
      undiciRate: median(uns.map((u) => u.rate)),
      cpuUndici: { client: median(uns.map((u) => u.cpu)), api: median(uns.map((u) => u.apiCpu)) },
      daemonCpuUsPerPoll: median(daemons.map((d) => (d.cpu.daemon * 10_000) / d.rate)),
      redis: redisCost(delta, polls, commits),
    };
  } finally {
    await api.stop();
  }
}

export function throughputOutcome(t: Throughput): Outcome {
  const met = t.ratio >= 0.5;
  const rt = t.redis.topLevel / t.redis.polls;
  const rtMet = rt <= 1;
  return {
    targets: [
      { figure: 'Poll throughput vs autocannon', target: '≥ 50 %', value: `${(t.ratio * 100).toFixed(1)} %`, met },
      { figure: 'Redis round trips per poll', target: '≤ 1', value: rt.toFixed(3), met: rtMet },
    ],
    figures: [
      {
        name: 'poll-throughput',
        text: `daemon ${fmt(t.daemonRate)} polls/s, autocannon ${fmt(t.autocannonRate)} req/s, ratio ${(t.ratio * 100).toFixed(1)} % (target ≥ 50 %: ${verdict(met)}); plain undici client ${fmt(t.undiciRate)} req/s`,
      },
      {
        name: 'redis-per-poll',
        text: `${rt.toFixed(3)} top-level round trips/poll (target ≤ 1: ${verdict(rtMet)}), ${(t.redis.total / t.redis.polls).toFixed(2)} commands/poll incl. inside scripts`,
      },
    ],
  };
}

/**
 * CPU per request of each client, and what the 50 % target would take on this machine: the
 * rate it names, and the CPU the daemon's one thread, Redis and the API stub would need there
 * at the per-poll costs just measured.
 */
export function budget(t: Throughput): string[] {
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

/** With --only nothing is written: the CPU split, the rounds and the budget on stderr instead. */
export function throughputDetail(t: Throughput): string[] {
  const c = t.cpuDaemon;
  return [
    `CPU % while the daemon ran: daemon ${c.daemon.toFixed(0)}, Redis ${c.redis.toFixed(0)}, API stub ${c.api.toFixed(0)}; rounds (daemon/autocannon/undici) ${t.rounds.map((x) => `${fmt(x.daemon)}/${fmt(x.autocannon)}/${fmt(x.undici)}`).join(' ')}`,
    ...budget(t).filter(Boolean),
  ];
}
