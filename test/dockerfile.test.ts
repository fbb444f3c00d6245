import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { startSimulator } from '../tools/simulator/server.ts';
import { freePort } from './kit/redis-server.ts';

/**
 * There is no Docker engine on our machines, so this test does what the Dockerfile says, step
 * by step, in a temporary folder: each stage gets its own root (a copy of its parent stage's,
 * for FROM <stage>), COPY copies from the context or another stage, RUN runs in the WORKDIR,
 * and the image's ENTRYPOINT + CMD starts the daemon, whose /healthz must answer and whose
 * HEALTHCHECK command must pass; the simulator stage (compose's letta-sim) must start and
 * answer GET /v1/health/ as Letta does. The steps are read from the Dockerfile itself, so a
 * change there is tested here. Only `apt-get` lines (tini) are skipped: they install system
 * packages, which a test must not do.
 */
const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface Instruction {
  op: string;
  args: string;
}

function parseDockerfile(text: string): Instruction[] {
  const joined = text.replace(/\\\r?\n/g, ' ');
  return joined
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const [op = '', ...rest] = l.split(/\s+/);
      return { op: op.toUpperCase(), args: rest.join(' ') };
    });
}

const work = mkdtempSync(join(tmpdir(), 'lrw-docker-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/**
 * The RUN steps' npm: offline, from a copy of this machine's npm cache (hard links: cacache's
 * files never change), so the image's `npm cache clean --force` empties the copy and not the
 * user's cache, and nothing is downloaded (the project's own `npm ci` filled the cache).
 */
function npmCacheCopy(): Record<string, string> {
  const own = spawnSync('npm', ['config', 'get', 'cache'], { encoding: 'utf8' }).stdout.trim();
  const copy = join(work, 'npm-cache');
  mkdirSync(copy, { recursive: true });
  if (own && existsSync(join(own, '_cacache'))) spawnSync('cp', ['-al', join(own, '_cacache'), join(copy, '_cacache')]);
  return { npm_config_cache: copy, npm_config_offline: 'true' };
}

/** The simulator stage's ENTRYPOINT + CMD (on a free port) answers GET /v1/health/ as Letta does. */
async function expectSimulatorStage(image: { root: string; workdir: string; entrypoint: string[]; cmd: string[] } | undefined): Promise<void> {
  expect(image, 'a stage named simulator').toBeDefined();
  const { root, workdir, entrypoint, cmd } = image as NonNullable<typeof image>;
  const [bin = '', ...argv] = [...entrypoint, ...cmd];
  expect(bin).toBe('node');
  const port = await freePort();
  const at = argv.indexOf('--port');
  argv[at + 1] = String(port);
  const child = spawn(process.execPath, argv, { cwd: join(root, workdir), stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  try {
    let body = '';
    for (let i = 0; i < 100 && !body.includes('"status"'); i++) {
      body = await fetch(`http://127.0.0.1:${port}/v1/health/`).then((r) => (r.ok ? r.text() : ''), () => '');
      if (!body) await new Promise((r) => setTimeout(r, 100));
    }
    expect(JSON.parse(body || 'null'), output).toMatchObject({ status: 'ok' });
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
}

describe('the Dockerfile, performed without Docker', () => {
  it('installs, builds and starts a daemon whose /healthz and HEALTHCHECK pass, and a simulator stage apart from it', async () => {
    const steps = parseDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
    const stages = new Map<string, string>();
    let stageRoot = '';
    let workdir = '/';
    let env: Record<string, string> = {};
    const npmEnv = npmCacheCopy();
    let entrypoint: string[] = [];
    let cmd: string[] = [];
    let healthcheck: string[] = [];
    /** Each stage's root, WORKDIR, ENTRYPOINT and CMD, by name. */
    const images = new Map<string, { root: string; workdir: string; entrypoint: string[]; cmd: string[] }>();
    let stageName = '';
    let skipped: string[] = [];
    const at = (p: string) => join(stageRoot, posix.isAbsolute(p) ? p : posix.join(workdir, p));

    for (const { op, args } of steps) {
      switch (op) {
        case 'FROM': {
          const [image = '', as, name] = args.split(/\s+/);
          const parent = stages.get(image);
          if (parent === undefined) expect(image).toBe('node:24-slim');
          stageRoot = join(work, `stage${stages.size}`);
          mkdirSync(stageRoot, { recursive: true });
          if (parent !== undefined) cpSync(parent, stageRoot, { recursive: true, verbatimSymlinks: true });
          stageName = as?.toUpperCase() === 'AS' && name ? name : String(stages.size);
          stages.set(stageName, stageRoot);
          workdir = parent === undefined ? '/' : (images.get(image)?.workdir ?? '/');
          if (parent === undefined) env = {};
          entrypoint = [];
          cmd = [];
          break;
        }
        case 'WORKDIR':
          workdir = args;
          mkdirSync(at('.'), { recursive: true });
          break;
        case 'ENV':
          for (const m of args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) env[m[1] as string] = (m[2] as string).replace(/^"|"$/g, '');
          break;
        case 'COPY': {
          const parts = args.split(/\s+/);
          const from = parts[0]?.startsWith('--from=') ? stages.get(parts.shift()!.slice('--from='.length)) : ROOT;
          expect(from).toBeDefined();
          const dest = parts.pop() as string;
          for (const src of parts) {
            const source = from === ROOT ? join(ROOT, src) : join(from as string, src);
            const target = dest.endsWith('/') || parts.length > 1 ? join(at(dest), posix.basename(src)) : at(dest);
            cpSync(source, target, { recursive: true });
          }
          break;
        }
        case 'RUN': {
          if (/^apt-get\b/.test(args)) {
            skipped.push(args);
            break;
          }
          const r = spawnSync('sh', ['-c', args], { cwd: at('.'), env: { ...process.env, ...env, ...npmEnv }, encoding: 'utf8' });
          expect(r.status, `RUN ${args}\n${r.stdout}\n${r.stderr}`).toBe(0);
          break;
        }
        case 'ENTRYPOINT':
          entrypoint = JSON.parse(args) as string[];
          break;
        case 'CMD':
          cmd = JSON.parse(args) as string[];
          break;
        case 'HEALTHCHECK':
          healthcheck = JSON.parse(args.slice(args.indexOf('CMD ') + 4)) as string[];
          break;
        default:
          break;
      }
      images.set(stageName, { root: stageRoot, workdir, entrypoint, cmd });
    }
    expect(skipped.join(' ')).toContain('tini');
    await expectSimulatorStage(images.get('simulator'));
    // tini comes from the skipped apt-get step; what it runs is the rest of the ENTRYPOINT.
    expect(entrypoint.slice(0, 2)).toEqual(['/usr/bin/tini', '--']);
    const [bin = '', ...argv] = [...entrypoint.slice(2), ...cmd];
    expect(bin).toBe('node');

    const sim = await startSimulator({ port: 0 });
    const port = await freePort();
    const runtimeEnv = {
      ...process.env,
      ...env,
      WATCHER_HTTP_PORT: String(port),
      REDIS_URL: inject('redisUrl'),
      LETTA_BASE_URL: sim.url,
      WATCHER_KEY_PREFIX: `docker-${Math.random().toString(36).slice(2, 8)}`,
    };
    // The runtime stage must not carry dev dependencies.
    expect(() => readFileSync(join(at('node_modules'), 'vitest/package.json'))).toThrow();
    const child = spawn(process.execPath, argv, { cwd: at('.'), env: runtimeEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    try {
      let status = 0;
      for (let i = 0; i < 100 && status !== 200; i++) {
        status = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.status, () => 0);
        if (status !== 200) await new Promise((r) => setTimeout(r, 100));
      }
      expect(status, output).toBe(200);
      const [hcBin = '', ...hcArgs] = healthcheck;
      expect(hcBin).toBe('node');
      const hc = spawnSync(process.execPath, hcArgs, { cwd: at('.'), env: runtimeEnv });
      expect(hc.status).toBe(0);
    } finally {
      child.kill('SIGTERM');
      const code = await new Promise<number | null>((r) => child.once('exit', r));
      await sim.close();
      expect(code, output).toBe(0);
    }
  }, 180_000);
});
