import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
export { seeded } from '../tools/simulator/prng.ts';
// The bench starts its own redis-server (startRedis below, not the tests' startRedisServer):
// its children are tracked so a signal or crash of the bench kills them, and its logs are kept
// for the error when Redis does not come up.
import { freePort } from '../test/kit/redis-server.ts';

/**
 * Plumbing for the benchmark: child processes (Redis, the API stub, the daemon, autocannon)
 * that are always cleaned up, Redis INFO parsing, /proc readings, percentiles, and a description of
 * the machine and of the code measured.
 */

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** The built daemon, as the image runs it (buildDaemon() writes it). */
export const MAIN = join(ROOT, 'dist/main.js');
export const NODE = process.execPath;

// ---------------------------------------------------------------------------------------------
// Children and temp dirs, killed and removed on any exit (normal, error, signal).

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();

export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

/** Synchronous, so it can run from process.on('exit'). */
export function cleanupNow(): void {
  for (const c of children) {
    try {
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  children.clear();
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

let handlersInstalled = false;
export function installCleanupHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', cleanupNow);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      process.stderr.write(`bench: ${sig}, cleaning up\n`);
      cleanupNow();
      process.exit(130);
    });
  }
}

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((r) => child.once('exit', (code) => r(code)));
}

/** Keeps the last `max` characters a child wrote, for error messages. */
function tail(child: ChildProcess, max = 8000): () => string {
  let buf = '';
  const add = (chunk: Buffer) => {
    buf += chunk.toString('utf8');
    if (buf.length > max * 2) buf = buf.slice(-max);
  };
  child.stdout?.on('data', add);
  child.stderr?.on('data', add);
  return () => buf.slice(-max);
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs: number,
  everyMs = 10,
  abortIf?: () => string | undefined,
): Promise<T> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    const why = abortIf?.();
    if (why) throw new Error(`${what}: ${why}`);
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------------------------------------
// Redis

export interface BenchRedis {
  url: string;
  version: string;
  client: Redis;
  stop(): Promise<void>;
}

/** A private redis-server on a free port: no persistence, noeviction. Never the machine's 6379. */
export async function startRedis(): Promise<BenchRedis> {
  const port = await freePort();
  const dir = tempDir('lrw-bench-redis-');
  const child = track(
    spawn(
      'redis-server',
      [
        '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no',
        '--maxmemory-policy', 'noeviction', '--loglevel', 'warning',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    ),
  );
  const logs = tail(child);
  const url = `redis://127.0.0.1:${port}`;
  const client = new Redis(url, { connectionName: 'bench', lazyConnect: true, maxRetriesPerRequest: null, retryStrategy: () => 50 });
  client.on('error', () => {});
  await waitFor(
    'redis-server to answer',
    async () => {
      try {
        if (client.status === 'wait') await client.connect();
        return (await client.ping()) === 'PONG';
      } catch {
        return false;
      }
    },
    10_000,
    25,
    () => (child.exitCode !== null ? `redis-server exited: ${logs()}` : undefined),
  );
  const version = /redis_version:(\S+)/.exec(await client.info('server'))?.[1] ?? 'unknown';
  return {
    url,
    version,
    client,
    async stop() {
      client.disconnect();
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await exited(child);
      }
    },
  };
}

export interface CommandStat {
  calls: number;
  usec: number;
}

export async function commandStats(redis: Redis): Promise<Map<string, CommandStat>> {
  const text = await redis.info('commandstats');
  const out = new Map<string, CommandStat>();
  for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    out.set(m[1] as string, { calls: Number(m[2]), usec: Number(m[3]) });
  }
  return out;
}

export function statDelta(before: Map<string, CommandStat>, after: Map<string, CommandStat>): Map<string, CommandStat> {
  const out = new Map<string, CommandStat>();
  for (const [name, a] of after) {
    const b = before.get(name) ?? { calls: 0, usec: 0 };
    const d = { calls: a.calls - b.calls, usec: a.usec - b.usec };
    if (d.calls > 0) out.set(name, d);
  }
  return out;
}

export async function usedMemory(redis: Redis): Promise<number> {
  return Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1] ?? Number.NaN);
}

/**
 * The commands the daemon's Lua scripts call, read from the sources: these show up in
 * commandstats too, but are executed inside one EVALSHA and cost no round trip.
 */
export function scriptInternalCommands(): Set<string> {
  const set = new Set<string>();
  const dir = join(ROOT, 'src/redis/lua');
  const files = readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.lua'));
  for (const file of files) {
    const text = readFileSync(join(dir, file), 'utf8');
    for (const m of text.matchAll(/(?:redis\.call|chunked|chunked_read)\(\s*['"]([A-Za-z]+)['"]/g)) set.add((m[1] as string).toLowerCase());
  }
  return set;
}

// ---------------------------------------------------------------------------------------------
// The API stub (a separate process) and the daemon

export interface ApiStats {
  requests: number;
  inflight: number;
  /** Server clock (performance.now, ms). */
  t: number;
}

export interface ApiServer {
  url: string;
  pid: number;
  stats(): Promise<ApiStats>;
  stop(): Promise<void>;
}

export async function startApiServer(latencyMs = 0): Promise<ApiServer> {
  const child = track(
    spawn(NODE, [join(ROOT, 'bench/api-server.ts'), '--latency-ms', String(latencyMs)], { stdio: ['ignore', 'pipe', 'pipe'] }),
  );
  const logs = tail(child);
  const port = await new Promise<number>((resolvePort, reject) => {
    let buf = '';
    const onData = (chunk: Buffer) => {
      buf += chunk.toString('utf8');
      const m = /"port":(\d+)/.exec(buf);
      if (m) {
        child.stdout?.off('data', onData);
        resolvePort(Number(m[1]));
      }
    };
    child.stdout?.on('data', onData);
    child.once('exit', () => reject(new Error(`API stub exited: ${logs()}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    pid: child.pid ?? 0,
    async stats() {
      const res = await fetch(`${url}/_stats`);
      return (await res.json()) as ApiStats;
    },
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await exited(child);
      }
    },
  };
}

export interface DaemonProcess {
  pid: number;
  child: ChildProcess;
  logs(): string;
  readonly exited: Promise<number | null>;
  /** SIGTERM, then waits; resolves with the exit code and ms from signal to exit. */
  stop(timeoutMs?: number): Promise<{ code: number | null; ms: number }>;
}

export interface DaemonOptions {
  redisUrl: string;
  apiUrl: string;
  /** WATCHER_* variables on top of the bench defaults. */
  env?: Record<string, string>;
  /** Written to a JSON file named by WATCHER_CONFIG (file-only keys). */
  config?: Record<string, unknown>;
  nodeArgs?: string[];
  /** Another build's main.js (A/B comparisons of a change); default this checkout's dist/. */
  main?: string;
}

/**
 * Builds dist/ from this checkout's src/ (`npm run build`), so the daemon measured is the one
 * the image runs: compiled JavaScript, not sources type-stripped at load, which kept 15–27 MB
 * more resident.
 */
export function buildDaemon(): void {
  execFileSync(NODE, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.build.json')], { cwd: ROOT, stdio: 'inherit' });
  // As `npm run build`: the Lua scripts are read at run time from next to the compiled loader.
  cpSync(join(ROOT, 'src/redis/lua'), join(ROOT, 'dist/redis/lua'), { recursive: true });
}

let defaultNodeArgs: string[] = [];
/** Node flags added to every daemon started from now on (before any per-call ones). */
export function setDaemonNodeArgs(flags: string[]): void {
  defaultNodeArgs = [...flags];
}

export function startDaemon(o: DaemonOptions): DaemonProcess {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || k.startsWith('WATCHER_') || k.startsWith('LETTA_') || k === 'REDIS_URL' || k === 'NODE_OPTIONS') continue;
    env[k] = v;
  }
  const dir = tempDir('lrw-bench-daemon-');
  const configFile = join(dir, 'config.json');
  writeFileSync(configFile, JSON.stringify(o.config ?? {}));
  Object.assign(env, {
    LETTA_BASE_URL: o.apiUrl,
    REDIS_URL: o.redisUrl,
    WATCHER_CONFIG: configFile,
    WATCHER_HTTP_PORT: '0',
    WATCHER_LOG_LEVEL: 'warn',
    // The API stub's run was created long ago: without this every run would be reported
    // stalled at its first poll, which is not the steady state the sections measure.
    WATCHER_STALLED_AFTER_MS: '0',
    ...o.env,
  });
  const child = track(spawn(NODE, [...defaultNodeArgs, ...(o.nodeArgs ?? []), o.main ?? MAIN, 'run'], { env, cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] }));
  const logs = tail(child);
  const done = exited(child);
  return {
    pid: child.pid ?? 0,
    child,
    logs,
    exited: done,
    async stop(timeoutMs = 60_000) {
      if (child.exitCode !== null || child.signalCode !== null) return { code: child.exitCode, ms: 0 };
      const t0 = performance.now();
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await done;
      clearTimeout(timer);
      return { code, ms: performance.now() - t0 };
    },
  };
}

/** Resolves once the daemon's Redis connection has run its first script (its loops are turning). */
export async function daemonReady(redis: Redis, d: DaemonProcess, timeoutMs = 20_000): Promise<void> {
  await daemonReadyOn([redis], d, timeoutMs);
}

/** The same, looking at several nodes (a cluster's masters): a script seen on any of them. */
export async function daemonReadyOn(nodes: Redis | readonly Redis[], d: DaemonProcess, timeoutMs = 20_000): Promise<void> {
  const list = Array.isArray(nodes) ? nodes : [nodes as Redis];
  await waitFor(
    'the daemon to start',
    async () => {
      const lists = await Promise.all(list.map((n) => n.client('LIST')));
      return lists.some((text) =>
        String(text)
          .split('\n')
          .some((line) => /\bname=letta-run-watcher\b/.test(line) && /\bcmd=(evalsha|eval)\b/.test(line)),
      );
    },
    timeoutMs,
    20,
    () => (d.child.exitCode !== null ? `daemon exited with ${d.child.exitCode}: ${d.logs()}` : undefined),
  );
}

/** A process and all its descendants, from /proc/<pid>/task/<tid>/children. */
function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    const p = out[i] as number;
    let tids: string[] = [];
    try {
      tids = readdirSync(`/proc/${p}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      try {
        for (const c of readFileSync(`/proc/${p}/task/${tid}/children`, 'utf8').trim().split(/\s+/)) if (c) out.push(Number(c));
      } catch {
        // the thread ended
      }
    }
  }
  return out;
}

/**
 * Resident set size (MiB) of a process and everything it started, from /proc, so a re-exec
 * or a helper process cannot hide memory; `peak` sums each one's VmHWM.
 */
export function rssOf(pid: number): { rss: number; peak: number } | undefined {
  let rss = 0;
  let peak = 0;
  let seen = 0;
  for (const p of processTree(pid)) {
    try {
      const s = readFileSync(`/proc/${p}/status`, 'utf8');
      const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? Number.NaN);
      rss += kb('VmRSS') / 1024;
      peak += kb('VmHWM') / 1024;
      seen++;
    } catch {
      // gone meanwhile
    }
  }
  return seen === 0 ? undefined : { rss, peak };
}

/** CPU time (ms) a process has used so far, from /proc/<pid>/stat (utime + stime). */
export function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(rest[11]) + Number(rest[12])) * 1000) / 100;
  } catch {
    return Number.NaN;
  }
}

// ---------------------------------------------------------------------------------------------
// Numbers

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] as number;
}

export function median(xs: readonly number[]): number {
  return percentile([...xs].sort((a, b) => a - b), 50);
}

export function mean(xs: readonly number[]): number {
  return xs.length === 0 ? Number.NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
}

export function fmt(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return 'n/a';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export interface Machine {
  cpu: string;
  cores: number;
  ramGiB: number;
  kernel: string;
  node: string;
  redis: string;
  date: string;
}

export function machine(redisVersion: string): Machine {
  let cpu = cpus()[0]?.model ?? 'unknown';
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    const name = /^model name\s*:\s*(.+)$/m.exec(info)?.[1];
    if (name) cpu = name.trim();
  } catch {
    // not Linux
  }
  return {
    cpu,
    cores: cpus().length,
    ramGiB: totalmem() / 2 ** 30,
    kernel: release(),
    node: process.version,
    redis: redisVersion,
    date: new Date().toISOString(),
  };
}

/** Which code was measured: the commit, and any uncommitted changes under src/ (read-only git). */
export function codeVersion(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'config', 'package.json'], { cwd: ROOT, encoding: 'utf8' })
      .split('\n')
      .map((l) => l.slice(3).trim())
      .filter(Boolean);
    return dirty.length === 0 ? `commit ${head}` : `commit ${head} + uncommitted changes in ${dirty.join(', ')}`;
  } catch {
    return 'unknown (not a git checkout)';
  }
}
