import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * `node bench/run.ts --smoke` runs every benchmark at tiny sizes: it must finish well inside a
 * minute, exit 0, print one FIGURE line per figure, and leave BENCHMARKS.md alone.
 */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const FIGURES = [
  'poll-throughput',
  'redis-per-poll',
  'intake-rate',
  'redis-memory',
  'daemon-rss',
  'claim-cost',
  'scale-intake',
  'detection-lag',
  'detection-lag-live',
  'shutdown',
  'detection-strategies',
  'idle',
  'cluster',
];

function run(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  return new Promise((done) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    // SIGTERM lets the bench clean up its own children (Redis, API stub, daemons).
    const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr, ms: performance.now() - t0 });
    });
  });
}

describe('bench smoke', () => {
  it('runs every benchmark at tiny sizes, prints each figure, writes nothing', { timeout: 120_000 }, async () => {
    const report = join(ROOT, 'BENCHMARKS.md');
    const before = existsSync(report) ? readFileSync(report, 'utf8') : undefined;
    const r = await run([join(ROOT, 'bench/run.ts'), '--smoke'], 110_000);
    expect(r.code, `bench --smoke failed:\n${r.stderr.slice(-4000)}`).toBe(0);
    for (const name of FIGURES) expect(r.stdout).toMatch(new RegExp(`^FIGURE ${name}: \\S`, 'm'));
    const after = existsSync(report) ? readFileSync(report, 'utf8') : undefined;
    expect(after).toBe(before);
    // The smoke is meant to stay well under a minute; a loaded CI machine gets some slack.
    expect(r.ms).toBeLessThan(100_000);
  });
});
