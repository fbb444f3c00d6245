/** What a chaos run can be told, and the full-size defaults (`node scripts/chaos.ts`). */

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

/** A progress line maker: each line is prefixed with the seconds since `started`. */
export function progressLog(log: (line: string) => void, started: number): (s: string) => void {
  const t = () => `[${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s]`;
  return (s: string) => log(`${t()} ${s}`);
}

/** A progress line, as `progressLog` makes them. */
export type Say = (s: string) => void;
