import { nextPollDelay, type CadenceOptions } from '../src/polling/cadence.ts';
import { mean, percentile, seeded } from './support.ts';

/**
 * Detection lag by Monte Carlo over the daemon's own `nextPollDelay`: a run is enqueued when it
 * starts (t = 0) and polled at once, then after each poll k at nextPollDelay(k). It is detected
 * by the first poll at or after its end D; lag = that poll's time − D; calls = polls made.
 * Request latency and Redis time are left out (they add the same small constant to every
 * strategy; the live check measures them).
 */

export interface LagSummary {
  label: string;
  p50: number;
  p90: number;
  p99: number;
  meanLag: number;
  meanCalls: number;
}

export interface RunSample {
  duration: number;
  lag: number;
  calls: number;
}

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

export interface MonteCarlo {
  n: number;
  minMs: number;
  maxMs: number;
  cadence: CadenceOptions;
  equalCallsIntervalMs: number;
  equalP99IntervalMs: number;
  rows: LagSummary[];
  /** Per duration bin: [bin centre ms, cadence p50, cadence p99, fixed p50, fixed p99]. */
  bins: [number, number, number, number, number][];
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

// ---------------------------------------------------------------------------------------------
// The chart: hand-written SVG, lag (s) against run duration (log scale).

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function niceCeil(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function durationLabel(ms: number): string {
  return ms >= 60_000 ? `${ms / 60_000} min` : `${ms / 1000} s`;
}

export function lagSvg(mc: MonteCarlo): string {
  const W = 820;
  const H = 470;
  const m = { l: 70, r: 24, t: 64, b: 92 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const la = Math.log(mc.minMs);
  const lb = Math.log(mc.maxMs);
  const x = (ms: number) => m.l + ((Math.log(ms) - la) / (lb - la)) * pw;
  const yMax = niceCeil(mc.bins.reduce((a, b) => Math.max(a, b[2], b[4]), 1) / 1000);
  const y = (ms: number) => m.t + ph - (ms / 1000 / yMax) * ph;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">Detection lag against run duration</text>`,
    `<text x="${W / 2}" y="42" text-anchor="middle" fill="#444">${esc(
      `Monte Carlo over nextPollDelay, ${mc.n.toLocaleString('en-US')} runs, durations log-uniform ${durationLabel(mc.minMs)}–${durationLabel(mc.maxMs)}`,
    )}</text>`,
  );
  // grid and y axis
  const yStep = yMax / 5;
  for (let i = 0; i <= 5; i++) {
    const v = i * yStep;
    const yy = y(v * 1000);
    out.push(
      `<line x1="${m.l}" y1="${yy.toFixed(1)}" x2="${m.l + pw}" y2="${yy.toFixed(1)}" stroke="#e5e5e5"/>`,
      `<text x="${m.l - 8}" y="${(yy + 4).toFixed(1)}" text-anchor="end">${Number(v.toFixed(2))}</text>`,
    );
  }
  for (const t of [2000, 5000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000]) {
    if (t < mc.minMs || t > mc.maxMs) continue;
    const xx = x(t);
    out.push(
      `<line x1="${xx.toFixed(1)}" y1="${m.t}" x2="${xx.toFixed(1)}" y2="${m.t + ph}" stroke="#eeeeee"/>`,
      `<text x="${xx.toFixed(1)}" y="${m.t + ph + 18}" text-anchor="middle">${durationLabel(t)}</text>`,
    );
  }
  out.push(
    `<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`,
    `<text x="${m.l + pw / 2}" y="${m.t + ph + 40}" text-anchor="middle">run duration (log scale)</text>`,
    `<text transform="translate(18 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">lag from run end to event (s)</text>`,
  );
  const series: [number, string, string, string][] = [
    [1, '#1f77b4', '', `default cadence p50`],
    [2, '#1f77b4', '6 4', `default cadence p99`],
    [3, '#e6550d', '', `fixed ${(mc.equalCallsIntervalMs / 1000).toFixed(2)} s p50`],
    [4, '#e6550d', '6 4', `fixed ${(mc.equalCallsIntervalMs / 1000).toFixed(2)} s p99`],
  ];
  for (const [col, colour, dash] of series) {
    const pts = mc.bins.map((b) => `${x(b[0]).toFixed(1)},${y(b[col] as number).toFixed(1)}`).join(' ');
    out.push(`<polyline points="${pts}" fill="none" stroke="${colour}" stroke-width="2"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`);
  }
  // legend below the plot
  const rowE = mc.rows[0];
  const rowF = mc.rows[1];
  const ly = H - 26;
  series.forEach(([, colour, dash, label], i) => {
    const lx = m.l + i * 180;
    out.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 26}" y2="${ly}" stroke="${colour}" stroke-width="2"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`,
      `<text x="${lx + 32}" y="${ly + 4}">${esc(label)}</text>`,
    );
  });
  if (rowE && rowF) {
    out.push(
      `<text x="${m.l}" y="${H - 6}" fill="#444">${esc(
        `both strategies make ${rowE.meanCalls.toFixed(1)} API calls per run on average; default cadence: initial ${mc.cadence.initialMs} ms, ×${mc.cadence.factor}, max ${mc.cadence.maxMs} ms, jitter ±${mc.cadence.jitter * 100}%`,
      )}</text>`,
    );
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
