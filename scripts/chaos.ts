#!/usr/bin/env node
/**
 * The chaos run: `node scripts/chaos.ts [--runs 2000] [--replicas 3] [--seconds 90] [--seed N]
 * [--redis-down-seconds 3] [--receiver-down-seconds 20]`.
 *
 * Runs go through several replicas of the real daemon (`node src/main.ts run`, child processes)
 * while everything around them misbehaves:
 *   - the Letta simulator answers 10 % 5xx, 5 % 429 with Retry-After, leaves 2 % of requests
 *     hanging, and sends 1 % malformed bodies (a wire tap in front of it counts what it sent);
 *   - the webhook receiver (two targets: event format and Letta's callback format) fails 30 %
 *     of first attempts and is down entirely for a while (a delivery that failed twice waits
 *     out 5 minutes unless a later success to its endpoint releases it, so failing retries on
 *     purpose could leave the last deliveries waiting past the drain; the outage still
 *     pushes deliveries back to 5 minutes, and catching up is what brings them);
 *   - a random replica is `kill -9`'d every few seconds and restarted;
 *   - the private redis-server (AOF on, appendfsync always) is restarted once mid-run.
 * At the end it prints the figures and checks them; the exit code is 1 when a check fails.
 * `runChaos` is the core, so a test can run a smaller variant.
 *
 * The pieces live in scripts/chaos/: options.ts (options and defaults), world.ts (Redis, the
 * simulator, the wire tap of tap.ts, the flaky receiver of receiver.ts), replicas.ts, faults.ts
 * (the chaos phase: which fault happens when), drain.ts, collect.ts, figures.ts, checks.ts,
 * report.ts (the report and its text), wait.ts (polling helpers) and run.ts (`runChaos`, the
 * steps in order).
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { FULL_CHAOS } from './chaos/options.ts';
import { formatReport } from './chaos/report.ts';
import { runChaos } from './chaos/run.ts';

export { scanSecrets } from './chaos/figures.ts';
export { FULL_CHAOS, type ChaosOptions } from './chaos/options.ts';
export { formatReport, type ChaosReport, type Check } from './chaos/report.ts';
export { runChaos } from './chaos/run.ts';

// ---------------------------------------------------------------------------------------------
// Command line

const isMain = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string' },
      replicas: { type: 'string' },
      seconds: { type: 'string' },
      seed: { type: 'string' },
      'redis-down-seconds': { type: 'string' },
      'receiver-down-seconds': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write('Usage: node scripts/chaos.ts [--runs 2000] [--replicas 3] [--seconds 90] [--seed N] [--redis-down-seconds 3] [--receiver-down-seconds 20]\n');
    process.exit(0);
  }
  const num = (v: string | undefined, name: string, fallback: number) => {
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) {
      process.stderr.write(`--${name}: expected a non-negative number, got ${JSON.stringify(v)}\n`);
      process.exit(78);
    }
    return n;
  };
  const seed = num(values.seed, 'seed', Math.floor(Math.random() * 2 ** 31));
  const report = await runChaos({
    runs: num(values.runs, 'runs', FULL_CHAOS.runs),
    replicas: Math.max(1, num(values.replicas, 'replicas', FULL_CHAOS.replicas)),
    seconds: num(values.seconds, 'seconds', FULL_CHAOS.seconds),
    seed,
    redisDownMs: num(values['redis-down-seconds'], 'redis-down-seconds', FULL_CHAOS.redisDownMs / 1000) * 1000,
    receiverDownMs: num(values['receiver-down-seconds'], 'receiver-down-seconds', FULL_CHAOS.receiverDownMs / 1000) * 1000,
  });
  process.stdout.write(`${formatReport(report)}\n`);
  process.exit(report.ok ? 0 : 1);
}
