import { nextPollDelay, type CadenceOptions } from '../src/polling/cadence.ts';
import { mean, percentile, seeded } from './support.ts';
import type { LagSummary, MonteCarlo, RunSample } from './types.ts';

/**
 * Detection lag by Monte Carlo over the daemon's own `nextPollDelay`: a run is enqueued when it
 * starts (t = 0) and polled at once, then after each poll k at nextPollDelay(k). It is detected
 * by the first poll at or after its end D; lag = that poll's time − D; calls = polls made.
 * Request latency and Redis time are left out (they add the same small constant to every
 * strategy; the live check measures them).
 */

/** Log-uniform durations in [minMs, maxMs]. */
export function logUniform(n: number, minMs: number, maxMs: number, random: () => number): number[] {
  const a = Math.log(minMs);
  const b = Math.log(maxMs);
  return Array.from({ length: n }, () => Math.exp(a + (b - a) * random()));
}

export function simulateCadence(durations: readonly number[], o: CadenceOptions, random: () => number): RunSample[] {
  return durations.map((duration) => {
    let t = 0;
    let polls = 1;
    while (t < duration) {
      t += nextPollDelay(polls, o, random);
      polls++;
    }
    return { duration, lag: t - duration, calls: polls };
  });
}

export function fixed(intervalMs: number): CadenceOptions {
  return { initialMs: intervalMs, maxMs: intervalMs, factor: 1, jitter: 0 };
}

export function summarize(label: string, samples: readonly RunSample[]): LagSummary {
  const lags = samples.map((s) => s.lag).sort((x, y) => x - y);
  return {
    label,
    p50: percentile(lags, 50),
    p90: percentile(lags, 90),
    p99: percentile(lags, 99),
    meanLag: mean(lags),
    meanCalls: mean(samples.map((s) => s.calls)),
  };
}

/** The whole-ms fixed interval whose mean calls per run is closest to `targetCalls`. */
export function intervalForCalls(durations: readonly number[], targetCalls: number): number {
  const calls = (i: number) => mean(durations.map((d) => 1 + Math.ceil(d / i)));
  let lo = 1;
  let hi = Math.ceil(durations.reduce((a, b) => Math.max(a, b), 1));
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (calls(mid) > targetCalls) lo = mid;
    else hi = mid;
  }
  return Math.abs(calls(lo) - targetCalls) < Math.abs(calls(hi) - targetCalls) ? lo : hi;
}

/** The whole-ms fixed interval whose p99 lag is closest to (and not above) `targetP99`. */
export function intervalForP99(durations: readonly number[], targetP99: number): number {
  const p99 = (i: number) => percentile(durations.map((d) => Math.ceil(d / i) * i - d).sort((x, y) => x - y), 99);
  let lo = 1;
  let hi = Math.max(2, Math.ceil(targetP99 * 2));
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (p99(mid) <= targetP99) lo = mid;
    else hi = mid;
  }
  return lo;
}

export function monteCarlo(n: number, minMs: number, maxMs: number, cadence: CadenceOptions, seed = 42): MonteCarlo {
  const durations = logUniform(n, minMs, maxMs, seeded(seed));
  const exp = simulateCadence(durations, cadence, seeded(seed + 1));
  const expSummary = summarize('default cadence (exponential, jittered)', exp);
  const equalCalls = intervalForCalls(durations, expSummary.meanCalls);
  const fix = simulateCadence(durations, fixed(equalCalls), seeded(seed + 2));
  const equalP99 = intervalForP99(durations, expSummary.p99);
  const fixP99 = simulateCadence(durations, fixed(equalP99), seeded(seed + 3));
  const rows = [
    expSummary,
    summarize(`fixed ${(equalCalls / 1000).toFixed(2)} s (same mean calls/run)`, fix),
    summarize(`fixed ${(equalP99 / 1000).toFixed(2)} s (same p99 lag)`, fixP99),
  ];
  const nBins = 24;
  const la = Math.log(minMs);
  const lb = Math.log(maxMs);
  const binOf = (d: number) => Math.min(nBins - 1, Math.floor(((Math.log(d) - la) / (lb - la)) * nBins));
  const perBin = Array.from({ length: nBins }, () => ({ e: [] as number[], f: [] as number[] }));
  exp.forEach((s, i) => {
    const b = perBin[binOf(s.duration)];
    b?.e.push(s.lag);
    b?.f.push(fix[i]?.lag ?? Number.NaN);
  });
  const bins = perBin
    .map((b, i): [number, number, number, number, number] => {
      const e = b.e.sort((x, y) => x - y);
      const f = b.f.sort((x, y) => x - y);
      const centre = Math.exp(la + ((i + 0.5) / nBins) * (lb - la));
      return [centre, percentile(e, 50), percentile(e, 99), percentile(f, 50), percentile(f, 99)];
    })
    .filter((b) => Number.isFinite(b[1]));
  return { n, minMs, maxMs, cadence, equalCallsIntervalMs: equalCalls, equalP99IntervalMs: equalP99, rows, bins };
}
