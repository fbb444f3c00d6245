import { setTimeout as sleep } from 'node:timers/promises';
import type { SimOutcome } from '../../tools/simulator/server.ts';
import { seeded } from '../../tools/simulator/prng.ts';
import type { ChaosOptions, Say } from './options.ts';
import type { ReplicaSet } from './replicas.ts';
import { until } from './wait.ts';
import type { World } from './world.ts';

/**
 * The chaos phase: `o.seconds` long, four tasks at once, each at its own times:
 *   - the producer enqueues the runs in batches of 50 over `enqueueFraction` of the phase;
 *   - the killer `kill -9`s a random replica (`kills` times spread over the phase, or one every
 *     `killEveryMs`) and starts a fresh one in its slot;
 *   - the receiver goes down at `receiverDownAt` for `receiverDownMs`;
 *   - redis-server stops at `redisRestartAt` and starts again after `redisDownMs`.
 * Run outcomes and durations, kill times and victims come from one PRNG seeded with `o.seed`.
 */

const OUTCOMES = ['completed', 'failed', 'cancelled'] as const satisfies readonly SimOutcome[];
export type Outcome = (typeof OUTCOMES)[number];

/** What the chaos phase did. */
export interface PhaseResult {
  /** Every run created, with the outcome the simulator will give it. */
  expected: Map<string, Outcome>;
  kills: number;
  redisRestarts: number;
  receiverOutageMs: number;
  /** Date.now() when the receiver came back (0: it never went down). */
  receiverUpAt: number;
}

interface Phase {
  o: ChaosOptions;
  world: World;
  replicas: ReplicaSet;
  say: Say;
  rnd: () => number;
  between: (lo: number, hi: number) => number;
  start: number;
  end: number;
  /** The time at a fraction of the phase. */
  at: (fraction: number) => number;
  withRedis: <T>(fn: () => Promise<T>) => Promise<T>;
  result: PhaseResult;
}

export async function runChaosPhase(o: ChaosOptions, world: World, replicas: ReplicaSet, say: Say): Promise<PhaseResult> {
  const rnd = seeded(o.seed);
  const start = Date.now();
  const p: Phase = {
    o,
    world,
    replicas,
    say,
    rnd,
    between: (lo, hi) => lo + rnd() * (hi - lo),
    start,
    end: start + o.seconds * 1000,
    at: (fraction) => start + fraction * o.seconds * 1000,
    withRedis: takingTurns(),
    result: { expected: new Map(), kills: 0, redisRestarts: 0, receiverOutageMs: 0, receiverUpAt: 0 },
  };
  // Started in this order: the killer draws its kill times before the producer's first batch.
  await Promise.all([produceRuns(p), killReplicas(p), takeReceiverDown(p), restartRedis(p)]);
  await until(p.end);
  say(`chaos phase over: ${p.result.kills} kills, ${p.result.redisRestarts} Redis restart; draining`);
  return p.result;
}

/** Producers and the Redis restart take turns: a push whose reply is lost would be re-sent. */
function takingTurns(): <T>(fn: () => Promise<T>) => Promise<T> {
  let turn: Promise<unknown> = Promise.resolve();
  return <T>(fn: () => Promise<T>): Promise<T> => {
    const p = turn.then(fn);
    turn = p.catch(() => {});
    return p;
  };
}

async function produceRuns(p: Phase): Promise<void> {
  const { o, world } = p;
  const batches = Math.max(1, Math.ceil(o.runs / 50));
  let made = 0;
  for (let b = 0; b < batches; b++) {
    await until(p.at((o.enqueueFraction * b) / batches));
    const n = Math.min(50, o.runs - made);
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      const outcome = OUTCOMES[Math.floor(p.rnd() * OUTCOMES.length)] ?? 'completed';
      const run = world.sim.createRun({ durationMs: Math.round(p.between(o.runDurationMs[0], o.runDurationMs[1])), outcome });
      p.result.expected.set(run.id, outcome);
      ids.push(run.id);
    }
    made += n;
    await p.withRedis(() => world.redis.lpush(world.keys.intake, ...ids));
  }
  p.say(`all ${made} runs enqueued`);
}

/** When the kills happen: `o.kills` of them spread over the phase, or one every `killEveryMs`. */
function killTimes(p: Phase): number[] {
  const { o } = p;
  const times: number[] = [];
  if (o.kills !== undefined) {
    for (let i = 0; i < o.kills; i++) times.push(p.at((i + 0.5 + (p.rnd() - 0.5) * 0.6) / o.kills * 0.9 + 0.05));
  } else {
    for (let when = p.start + p.between(...o.killEveryMs); when < p.end; when += p.between(...o.killEveryMs)) times.push(when);
  }
  return times;
}

async function killReplicas(p: Phase): Promise<void> {
  const { world, replicas } = p;
  for (const when of killTimes(p)) {
    await until(when);
    const i = Math.floor(p.rnd() * replicas.current.length);
    const victim = replicas.current[i];
    if (!victim) continue;
    const watched = await Promise.race([world.redis.zcard(world.keys.due), sleep(500).then(() => -1)]);
    await victim.kill9();
    p.result.kills++;
    p.say(`kill -9 replica #${i} (pid ${victim.daemon.child.pid}); runs watched: ${watched === -1 ? '? (Redis away)' : watched}`);
    replicas.replace(i);
  }
}

async function takeReceiverDown(p: Phase): Promise<void> {
  const { o } = p;
  const { rx } = p.world.receiver;
  if (o.receiverDownMs <= 0) return;
  await until(p.at(o.receiverDownAt));
  await rx.down();
  const downAt = performance.now();
  p.say(`webhook receiver down for ${o.receiverDownMs / 1000} s`);
  // A timer may fire up to a millisecond early by a fresh clock read (it counts from the
  // event loop's cached time), so wait until the clock itself says the outage is over.
  for (let left = o.receiverDownMs; left > 0; left = downAt + o.receiverDownMs - performance.now()) await sleep(Math.ceil(left));
  await rx.up();
  p.result.receiverUpAt = Date.now();
  p.result.receiverOutageMs = Math.round(performance.now() - downAt);
  p.say('webhook receiver up again');
}

async function restartRedis(p: Phase): Promise<void> {
  const { o } = p;
  const { redisServer } = p.world;
  await until(p.at(o.redisRestartAt));
  await p.withRedis(async () => {
    await redisServer.stop();
    p.say(`redis-server stopped (AOF, appendfsync always); back in ${o.redisDownMs / 1000} s`);
    await sleep(o.redisDownMs);
    await redisServer.start();
    p.result.redisRestarts++;
    p.say('redis-server started again');
  });
}
