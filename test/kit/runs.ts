import type { CreatedRun, SimOutcome, SimRunSpec, Simulator } from '../../tools/simulator/server.ts';

/** The outcomes a run that ends can have. */
export const OUTCOMES = ['completed', 'failed', 'cancelled'] as const;

/** Runs created in the simulator, by ID, in creation order. */
export class Runs extends Map<string, CreatedRun> {
  get ids(): string[] {
    return [...this.keys()];
  }

  get list(): CreatedRun[] {
    return [...this.values()];
  }
}

export interface CreateRunsOptions {
  /** Each run's duration: fixed, drawn uniformly from [min, max] (needs `random`), or per run. Default 0. */
  durationMs?: number | readonly [number, number] | ((i: number) => number);
  /**
   * Each run's outcome: fixed, 'cycled' (completed, failed, cancelled in turn: every outcome
   * from three runs on), 'drawn' (uniformly, needs `random`), or per run. Default 'cycled'.
   */
  outcome?: SimOutcome | 'cycled' | 'drawn' | ((i: number) => SimOutcome);
  /** More of each run's spec (metadata, stop reason, callback URL); wins over the above. */
  spec?: (i: number) => SimRunSpec;
  /** Where the draws come from (a seeded stream: see seed.ts). */
  random?: () => number;
  /** Adds the runs to this map (and returns it) rather than to a new one. */
  into?: Runs;
}

/** Creates `n` runs in the simulator as `options` say. */
export function createRuns(sim: Simulator, n: number, options: CreateRunsOptions = {}): Runs {
  const { durationMs = 0, outcome = 'cycled', spec, random, into = new Runs() } = options;
  const draw = (): number => {
    if (!random) throw new Error('createRuns: a drawn duration or outcome needs options.random (a seeded stream)');
    return random();
  };
  for (let i = 0; i < n; i++) {
    const duration =
      typeof durationMs === 'number' ? durationMs : typeof durationMs === 'function' ? durationMs(i) : durationMs[0] + Math.floor(draw() * (durationMs[1] - durationMs[0] + 1));
    const chosen: SimOutcome =
      outcome === 'cycled'
        ? (OUTCOMES[i % OUTCOMES.length] ?? 'completed')
        : outcome === 'drawn'
          ? (OUTCOMES[Math.floor(draw() * OUTCOMES.length)] ?? 'completed')
          : typeof outcome === 'function'
            ? outcome(i)
            : outcome;
    const run = sim.createRun({ durationMs: duration, outcome: chosen, ...spec?.(i) });
    into.set(run.id, run);
  }
  return into;
}
