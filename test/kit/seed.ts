import { beforeAll, beforeEach } from 'vitest';
import { seeded } from '../../tools/simulator/prng.ts';

/**
 * Seeded randomness for the suites: whatever a test draws (run durations and outcomes, fault
 * timing, which replica to kill, the simulator's own dice) comes from one seed, printed once per
 * suite, so a failure repeats with LRW_SEED=<seed>. Each test draws from its own stream, derived
 * from the seed and the test's name, so a test repeats alone (`-t`) as it ran in the whole file.
 * Random key prefixes, temp names and secrets need no seed and do not use this.
 */

export interface Rng {
  /** The suite's seed (LRW_SEED, or the suite's own variable, or a fresh random one). */
  readonly seed: number;
  /** Uniform in [0, 1), from the current test's stream. */
  readonly random: () => number;
  /** Uniform integer in [min, max]. */
  int(min: number, max: number): number;
  pick<T>(items: readonly T[]): T;
  /**
   * An independent stream for `label` in the current test (a simulator's dice, say), so what
   * it draws at its own pace does not shift what the test draws.
   */
  stream(label: string): () => number;
}

/** The first of `names` (then LRW_SEED) that is set, as a whole number; else a fresh seed. */
export function seedFromEnv(...names: string[]): number {
  for (const name of [...names, 'LRW_SEED']) {
    const raw = process.env[name];
    if (raw === undefined || raw === '') continue;
    const seed = Number(raw);
    if (!Number.isInteger(seed)) throw new Error(`${name}=${JSON.stringify(raw)} is not a whole number`);
    return seed >>> 0;
  }
  return Math.floor(Math.random() * 2 ** 31);
}

/** FNV-1a of `text`, mixed with `seed`: the seed of a derived stream. */
function derive(seed: number, text: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/**
 * The suite's Rng: call it at the top of a test file (or a describe). It gives every test its
 * own stream (beforeEach) and prints the seed the first time anything draws from it (once per
 * suite: a suite that draws nothing prints nothing). `env` names a variable read before
 * LRW_SEED (LRW_FUZZ_SEED, LRW_CHAOS_SEED).
 */
export function useSeed(options: { env?: string } = {}): Rng {
  const names = options.env === undefined ? [] : [options.env];
  const seed = seedFromEnv(...names);
  const variable = options.env ?? 'LRW_SEED';
  let suiteName = '';
  let testName = '';
  let printed = false;
  let current = seeded(seed);
  const streams = new Map<string, number>();
  const used = () => {
    if (printed) return;
    printed = true;
    console.log(`${suiteName || 'suite'}: seed ${seed} (repeat with ${variable}=${seed})`);
  };
  beforeAll(({}, suite) => {
    suiteName = suite.file?.name ?? suite.name;
  });
  beforeEach((ctx) => {
    testName = ctx.task.fullTestName ?? ctx.task.name;
    current = seeded(derive(seed, testName));
    streams.clear();
  });
  const random = () => {
    used();
    return current();
  };
  return {
    get seed() {
      used();
      return seed;
    },
    random,
    int: (min, max) => min + Math.floor(random() * (max - min + 1)),
    pick<T>(items: readonly T[]): T {
      if (items.length === 0) throw new Error('pick from an empty list');
      return items[Math.floor(random() * items.length)] as T;
    },
    stream(label) {
      used();
      const n = streams.get(label) ?? 0;
      streams.set(label, n + 1);
      return seeded(derive(seed, `${testName}\n${label}#${n}`));
    },
  };
}
