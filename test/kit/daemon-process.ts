import { spawn, type ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { waitFor } from './wait.ts';

/**
 * The daemon binary as a child process (`node src/main.ts run`), for the crash suites and the
 * chaos script alike: no test runner needed.
 */

/** The repository, and the daemon's entry point. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const MAIN = join(ROOT, 'src/main.ts');

export interface SpawnedDaemon {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Exit code once the process ended (null while running, or when ended by a signal). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL, then wait until the process is gone. */
  kill9(): Promise<void>;
  /** SIGTERM, then wait for the exit code (SIGKILL after `timeoutMs`, and throw). */
  stop(timeoutMs?: number): Promise<number | null>;
  /** Everything written to stdout and stderr so far. */
  output(): string;
  /** Resolves once the daemon reports its loops running (needs WATCHER_LOG_LEVEL info). */
  ready(timeoutMs?: number): Promise<void>;
}

const running = new Set<SpawnedDaemon>();

/**
 * Starts `node src/main.ts run` with a minimal environment plus `env` (no variables leak in
 * from the test process, so a stray REDIS_URL or WATCHER_* cannot change what runs).
 */
export function spawnDaemon(env: Record<string, string>): SpawnedDaemon {
  const child = spawn(process.execPath, [MAIN, 'run'], {
    cwd: ROOT,
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? tmpdir(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const chunks: string[] = [];
  child.stdout?.setEncoding('utf8').on('data', (s: string) => chunks.push(s));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => chunks.push(s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolveExit) => {
    child.once('exit', (code, signal) => resolveExit({ code, signal }));
  });
  const d: SpawnedDaemon = {
    child,
    get pid() {
      return child.pid ?? -1;
    },
    exited,
    async kill9() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
      running.delete(d);
    },
    async stop(timeoutMs = 15_000) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = sleep(timeoutMs).then(() => 'timeout' as const);
      const first = await Promise.race([exited, timer]);
      if (first === 'timeout') {
        await d.kill9();
        throw new Error(`daemon ${child.pid} did not exit within ${timeoutMs} ms of SIGTERM\n${d.output()}`);
      }
      running.delete(d);
      return first.code;
    },
    output: () => chunks.join(''),
    async ready(timeoutMs = 20_000) {
      // The daemon logs this line (at info) once its loops run.
      await waitFor(() => chunks.join('').includes('"msg":"letta-run-watcher running"'), {
        timeoutMs,
        describe: () => `daemon ${child.pid} did not report running:\n${chunks.join('').slice(-2000)}`,
      });
    },
  };
  running.add(d);
  return d;
}

/** SIGKILLs every child still running (afterEach). */
export async function killAllDaemons(): Promise<void> {
  await Promise.all([...running].map((d) => d.kill9()));
}
