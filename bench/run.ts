import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { detectionSvg, lagSvg } from './charts.ts';
import { SECTIONS, sizesFor, type Section } from './config.ts';
import { figure, note } from './output.ts';
import { profileMarkdown, report } from './report.ts';
import { benchCluster, clusterOutcome } from './sections/cluster.ts';
import { benchDetection, detectionOutcome } from './sections/detection.ts';
import { benchIdle, idleOutcome } from './sections/idle.ts';
import { benchIntake, intakeOutcome } from './sections/intake.ts';
import { benchLag, lagOutcome } from './sections/lag.ts';
import { profileDaemon, profileOutcome } from './sections/profile.ts';
import { benchScale, scaleOutcome } from './sections/scale.ts';
import { benchShutdown, shutdownOutcome } from './sections/shutdown.ts';
import { benchThroughput, throughputDetail, throughputOutcome } from './sections/throughput.ts';
import { ROOT, buildDaemon, cleanupNow, codeVersion, installCleanupHandlers, machine, setDaemonNodeArgs, startRedis } from './support.ts';
import type { BenchContext, ClusterBench, Detection, Idle, Intake, Lag, Outcome, ProfileRun, ReportInput, Scale, Shutdown, Target, Throughput } from './types.ts';

/**
 * `npm run bench`: measures the daemon in one run and writes BENCHMARKS.md and bench/lag.svg.
 * `node bench/run.ts --smoke`: every benchmark at tiny sizes (CI), writes nothing.
 * `--no-profile`: skip the CPU profile taken after the measurements.
 * `--only=throughput,intake,scale,lag,shutdown,profile`: just those sections (to re-measure
 *   after a change; combine with --smoke for tiny sizes); writes nothing.
 * `--node-args="--max-semi-space-size=2"`: node flags for every daemon started, instead of the
 *   image's (noted in the report).
 *
 * Every figure is printed as one `FIGURE <name>: ...` line.
 *
 * This file only decides what runs and writes the output: each section is measured and judged
 * in bench/sections/, BENCHMARKS.md is written by bench/report.ts, the charts by bench/charts.ts.
 */

const args = new Set(process.argv.slice(2));
const SMOKE = args.has('--smoke');
const onlyArg = [...args].find((a) => a.startsWith('--only='));
const ONLY = onlyArg === undefined ? undefined : new Set(onlyArg.slice('--only='.length).split(','));
for (const name of ONLY ?? []) {
  if (!(SECTIONS as readonly string[]).includes(name)) throw new Error(`--only: unknown section ${name} (known: ${SECTIONS.join(', ')})`);
}
const nodeArgsArg = [...args].find((a) => a.startsWith('--node-args='));
/**
 * By default the daemon starts as users start it, `node dist/main.js run` with no flags: it
 * re-executes itself with the image's heap flags (src/main.ts), and memory is read over its
 * whole process tree. --node-args passes flags on the command line instead.
 */
const DAEMON_NODE_ARGS = nodeArgsArg === undefined ? [] : nodeArgsArg.slice('--node-args='.length).split(/\s+/).filter(Boolean);
const want = (section: Section) => ONLY === undefined || ONLY.has(section);
const PROFILE = !SMOKE && !args.has('--no-profile') && want('profile');

/** Targets for the report's table, in the order the sections ran. */
const targets: Target[] = [];

/** Prints a result's FIGURE lines and keeps its targets; returns the result. */
function record<T>(result: T, outcome: (r: T) => Outcome): T {
  const o = outcome(result);
  targets.push(...o.targets);
  for (const f of o.figures) figure(f.name, f.text);
  return result;
}

async function main(): Promise<number> {
  installCleanupHandlers();
  setDaemonNodeArgs(DAEMON_NODE_ARGS);
  const started = performance.now();
  const loadAtStart = loadavg()[0] ?? Number.NaN;
  const code = codeVersion();
  note(SMOKE ? 'smoke mode: tiny sizes, BENCHMARKS.md is not written' : 'full run');
  if (DAEMON_NODE_ARGS.length > 0) note(`daemon node flags: ${DAEMON_NODE_ARGS.join(' ')}`);
  note('building dist/ (the daemon runs as node dist/main.js, as in the image)');
  buildDaemon();
  const redis = await startRedis();
  const redisPid = Number(/process_id:(\d+)/.exec(await redis.client.info('server'))?.[1] ?? 0);
  try {
    const m = machine(redis.version);
    const ctx: BenchContext = { redis, redisPid, sizes: sizesFor(SMOKE) };
    let throughput: Throughput | undefined;
    let intake: Intake | undefined;
    let scale: Scale | undefined;
    let lag: Lag | undefined;
    let shutdown: Shutdown[] | undefined;
    let detection: Detection | undefined;
    let idle: Idle | undefined;
    let cluster: ClusterBench | undefined;
    let profile: ProfileRun | undefined;
    if (want('throughput')) {
      note('1-2. poll throughput and Redis cost per poll');
      throughput = record(await benchThroughput(ctx), throughputOutcome);
      if (ONLY) for (const line of throughputDetail(throughput)) note(line);
    }
    if (want('intake')) {
      note('3. intake rate');
      intake = record(await benchIntake(ctx), intakeOutcome);
    }
    if (want('scale')) {
      note('4. scale');
      scale = record(await benchScale(ctx), scaleOutcome);
    }
    if (want('lag')) {
      note('5. detection lag');
      lag = record(await benchLag(ctx), lagOutcome);
    }
    if (want('shutdown')) {
      note('6. shutdown');
      shutdown = record(await benchShutdown(ctx), shutdownOutcome);
    }
    if (want('detection')) {
      note('5b. detection at real time, five strategies');
      detection = record(await benchDetection(ctx), detectionOutcome);
    }
    if (want('idle')) {
      note('8. an idle replica');
      idle = record(await benchIdle(ctx), idleOutcome);
    }
    if (want('cluster')) {
      note('7. Redis Cluster');
      cluster = record(await benchCluster(ctx), clusterOutcome);
    }
    if (PROFILE) {
      note('CPU profile of the daemon');
      profile = await profileDaemon(ctx);
      if (profile) {
        record(profile, profileOutcome);
        // With --only nothing is written, so show the breakdown here.
        if (ONLY) process.stderr.write(`${profileMarkdown(profile.summary)}\n`);
      }
    }
    const seconds = (performance.now() - started) / 1000;
    if (!SMOKE && throughput && intake && scale && lag && shutdown) {
      const input: ReportInput = {
        code, machine: m, load: [loadAtStart, loadavg()[0] ?? Number.NaN], sizes: ctx.sizes, daemonNodeArgs: DAEMON_NODE_ARGS, targets,
        throughput, intake, scale, lag, shutdown, profile, cluster, detection, idle, seconds,
      };
      writeFileSync(join(ROOT, 'bench/lag.svg'), lagSvg(lag.mc));
      if (detection) writeFileSync(join(ROOT, 'bench/detection.svg'), detectionSvg(detection));
      writeFileSync(join(ROOT, 'BENCHMARKS.md'), report(input));
      note('wrote BENCHMARKS.md and bench/lag.svg');
    } else {
      if (lag) lagSvg(lag.mc); // exercise the charts too
      if (detection) detectionSvg(detection);
      note('not writing BENCHMARKS.md (--smoke or --only)');
    }
    note(`done in ${seconds.toFixed(1)} s`);
    return 0;
  } finally {
    await redis.stop();
  }
}

main().then(
  (code) => {
    cleanupNow();
    process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
    cleanupNow();
    process.exit(1);
  },
);
