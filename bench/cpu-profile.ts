import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ROOT } from './support.ts';
import type { ProfileSummary } from './types.ts';

/**
 * Reads a V8 .cpuprofile (node --cpu-prof) and says where the time went: self time by area
 * (the daemon's own files, each npm package, Node internals, GC), the top functions by self
 * time, and the daemon's own functions by inclusive time.
 */

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** A frame's file: relative to the checkout, or `package/path` inside node_modules. */
function where(url: string): string {
  if (!url) return '';
  const path = url.startsWith('file://') ? decodeURIComponent(new URL(url).pathname) : url;
  const nm = path.lastIndexOf('/node_modules/');
  if (nm >= 0) return path.slice(nm + '/node_modules/'.length);
  return path.startsWith('/') ? relative(ROOT, path) : path;
}

/**
 * Whether a frame is the daemon's own code: a file under the checkout's dist/ (the build the
 * bench runs, `node dist/main.js`) or src/ (the sources, run type-stripped), not a package.
 */
export function isDaemonCode(url: string): boolean {
  if (!url || url.includes('/node_modules/')) return false;
  return /^(dist|src)\//.test(where(url));
}

function area(url: string, fn: string): string {
  if (!url) return fn.startsWith('(') ? fn : '(native)';
  const w = where(url);
  if (url.includes('/node_modules/')) {
    const parts = w.split('/');
    return parts[0]?.startsWith('@') ? `${parts[0]}/${parts[1] ?? ''}` : (parts[0] ?? w);
  }
  if (w.startsWith('node:')) return 'node: internals';
  return w;
}

export function latestProfile(dir: string): string | undefined {
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).sort();
  const last = files[files.length - 1];
  return last === undefined ? undefined : join(dir, last);
}

export function summarizeProfile(file: string, top = 15): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const key = (n: ProfileNode) => {
    const f = n.callFrame;
    return `${f.functionName || '(anonymous)'} ${where(f.url)}${f.url ? `:${f.lineNumber + 1}` : ''}`;
  };
  const self = new Map<string, number>();
  const areas = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let total = 0;
  let idle = 0;
  p.samples.forEach((id, i) => {
    const dt = (p.timeDeltas[i] ?? 0) / 1000;
    const n = byId.get(id);
    if (!n) return;
    total += dt;
    if (n.callFrame.functionName === '(idle)') {
      idle += dt;
      return;
    }
    const k = key(n);
    self.set(k, (self.get(k) ?? 0) + dt);
    const a = area(n.callFrame.url, n.callFrame.functionName);
    areas.set(a, (areas.get(a) ?? 0) + dt);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const node = byId.get(cur);
      if (!node || !isDaemonCode(node.callFrame.url)) continue;
      const kk = key(node);
      if (seen.has(kk)) continue;
      seen.add(kk);
      inclusive.set(kk, (inclusive.get(kk) ?? 0) + dt);
    }
  });
  const busy = total - idle;
  const list = (m: Map<string, number>, n: number) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, ms]) => ({ name, ms, pct: (100 * ms) / busy }));
  return {
    totalMs: total,
    idlePct: (100 * idle) / total,
    areas: list(areas, 12),
    self: list(self, top),
    inclusiveOwn: list(inclusive, 12),
  };
}

