import { layoutFor } from '../src/redis/keys.ts';
import type { Sizes } from './types.ts';

/**
 * What the sections share: their sizes (full run or `--smoke`), the key layout the bench's own
 * daemons use, and the settings the report names.
 */

/** Every section, in the order they run; `--only=` takes these names. */
export const SECTIONS = ['throughput', 'intake', 'scale', 'lag', 'detection', 'shutdown', 'cluster', 'idle', 'profile'] as const;
export type Section = (typeof SECTIONS)[number];

export const PREFIX = 'letta-watch';
export const LAYOUT = layoutFor(PREFIX);
export const KEYS = { ...LAYOUT.partitions[0]!, intake: LAYOUT.intake };
export const LEASE_MS = 120_000;
export const CONCURRENCY = 32;

const SMOKE_SIZES: Sizes = {
  throughputRuns: 500, warmupS: 1, windowS: 2, throughputRounds: 1,
  intakeN: 5_000,
  claimSizes: [3_000, 6_000], scaleN: 20_000, scalePollS: 2, claimSamples: 5,
  mcN: 5_000, liveScale: 200, liveRuns: 40, liveSpreadMs: 200,
  shutdownN: 200, drainLatencyMs: 1_500, handBackLatencyMs: 30_000, handBackGraceMs: 500,
  profileS: 0,
  clusterRuns: 500, clusterWarmupS: 1, clusterWindowS: 2,
  detectRuns: 40, detectMinMs: 300, detectMaxMs: 3000, idleS: 3,
};

const FULL_SIZES: Sizes = {
  throughputRuns: 10_000, warmupS: 3, windowS: 5, throughputRounds: 3,
  intakeN: 100_000,
  claimSizes: [10_000, 100_000], scaleN: 1_000_000, scalePollS: 15, claimSamples: 30,
  mcN: 200_000, liveScale: 40, liveRuns: 400, liveSpreadMs: 2_000,
  shutdownN: 10_000, drainLatencyMs: 8_000, handBackLatencyMs: 60_000, handBackGraceMs: 2_000,
  profileS: 10,
  clusterRuns: 20_000, clusterWarmupS: 3, clusterWindowS: 10,
  detectRuns: 500, detectMinMs: 1000, detectMaxMs: 120_000, idleS: 30,
};

export function sizesFor(smoke: boolean): Sizes {
  return smoke ? SMOKE_SIZES : FULL_SIZES;
}
