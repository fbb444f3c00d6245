import { collect } from './collect.ts';
import { runChecks } from './checks.ts';
import { drain } from './drain.ts';
import { runChaosPhase } from './faults.ts';
import { computeFigures } from './figures.ts';
import { FULL_CHAOS, progressLog, type ChaosOptions } from './options.ts';
import { replicaSet } from './replicas.ts';
import type { ChaosReport } from './report.ts';
import { runCleanups, startWorld, type Cleanups } from './world.ts';

/**
 * One chaos run, step by step: set up the world around the daemon, start the replicas, run the
 * chaos phase, drain, stop the replicas, collect what is left, work out the figures and check
 * them. Everything started is killed and cleaned up at the end, whatever happened.
 */
export async function runChaos(partial: Partial<ChaosOptions> = {}): Promise<ChaosReport> {
  const o: ChaosOptions = { ...FULL_CHAOS, ...partial };
  const started = Date.now();
  const say = progressLog(o.log, started);
  const cleanups: Cleanups = [];
  const replicas = replicaSet();

  say(`chaos: ${o.runs} runs, ${o.replicas} replicas, ${o.seconds} s of chaos, seed ${o.seed}`);
  try {
    const world = await startWorld(o, cleanups);
    await replicas.launch(world.env, o.replicas);
    say(`${o.replicas} replicas running (prefix ${world.prefix}); Letta API behind a tap at ${world.tap.url}`);

    const phase = await runChaosPhase(o, world, replicas, say);
    await drain(o, world, say);
    const exitCodes = await replicas.stopAll();
    say(`replicas stopped with SIGTERM: exit codes ${exitCodes.join(', ')}`);

    const collected = await collect(world, replicas);
    const figures = computeFigures({ o, world, phase, collected, exitCodes, elapsedMs: Date.now() - started });
    const checks = runChecks(figures, { firstDeadLetter: collected.deadRaw[0], badPaths: world.tap.badPaths });
    return { ...figures, checks, ok: checks.every((c) => c.ok) };
  } finally {
    await replicas.killAll();
    await runCleanups(cleanups);
  }
}
