import { fmt } from './support.ts';
import type { Detection, MonteCarlo } from './types.ts';

/**
 * The report's charts, hand-written SVG: bench/lag.svg (section 5, detection lag against run
 * duration) and bench/detection.svg (section 7, lag and requests per strategy).
 */

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

// ---------------------------------------------------------------------------------------------
// bench/lag.svg: lag (s) against run duration (log scale).

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

// ---------------------------------------------------------------------------------------------
// bench/detection.svg

const sec = (ms: number) => (ms / 1000).toFixed(2);

/** Bars: p50 and p99 lag per strategy, and requests per run. */
export function detectionSvg(d: Detection): string {
  const w = 720;
  const rowH = 46;
  const left = 190;
  const h = 40 + rowH * d.results.length + 30;
  const maxLag = Math.max(1, ...d.results.map((r) => r.p99Ms));
  const maxReq = Math.max(1, ...d.results.map((r) => r.requestsPerRun));
  const lagW = 300;
  const reqW = 150;
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const rows = d.results
    .map((r, i) => {
      const y = 40 + i * rowH;
      const p50 = (r.p50Ms / maxLag) * lagW;
      const p99 = (r.p99Ms / maxLag) * lagW;
      const req = (r.requestsPerRun / maxReq) * reqW;
      return [
        `<text x="${left - 8}" y="${y + 18}" text-anchor="end" font-size="12">${esc(r.name)}</text>`,
        `<rect x="${left}" y="${y + 4}" width="${p99.toFixed(1)}" height="12" fill="#f4a582"/>`,
        `<rect x="${left}" y="${y + 4}" width="${p50.toFixed(1)}" height="12" fill="#ca0020"/>`,
        `<text x="${left + p99 + 4}" y="${y + 14}" font-size="10">p50 ${sec(r.p50Ms)} s, p99 ${sec(r.p99Ms)} s</text>`,
        `<rect x="${left + lagW + 90}" y="${y + 22}" width="${req.toFixed(1)}" height="12" fill="#0571b0"/>`,
        `<text x="${left + lagW + 94 + req}" y="${y + 32}" font-size="10">${r.requestsPerRun.toFixed(2)} req/run</text>`,
      ].join('');
    })
    .join('\n');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif">`,
    `<rect width="${w}" height="${h}" fill="white"/>`,
    `<text x="10" y="20" font-size="13">Detection lag (red: p50, light: p99) and API requests per run (blue), ${fmt(d.runs)} runs of ${d.minMs / 1000}-${d.maxMs / 1000} s</text>`,
    rows,
    '</svg>',
    '',
  ].join('\n');
}
