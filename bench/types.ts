import type { CadenceOptions } from '../src/polling/cadence.ts';
import type { BenchRedis, Machine } from './support.ts';

/**
 * The bench's shared types: what a section is given (BenchContext, Sizes), what it measured
 * (one result type per section, read by report.ts and charts.ts), and what it judged (Outcome:
 * targets for the report's table, FIGURE lines for stdout). The plumbing's own types (BenchRedis,
 * ApiServer, DaemonProcess, …) stay with it in support.ts.
 */

// ---------------------------------------------------------------------------------------------
// Running a section

/** How big each section runs: `--smoke` or full (config.ts). */
export interface Sizes {
  throughputRuns: number;
  warmupS: number;
  windowS: number;
  throughputRounds: number;
  intakeN: number;
  claimSizes: number[];
  scaleN: number;
  scalePollS: number;
  claimSamples: number;
  mcN: number;
  liveScale: number;
  liveRuns: number;
  liveSpreadMs: number;
  shutdownN: number;
  drainLatencyMs: number;
  handBackLatencyMs: number;
  handBackGraceMs: number;
  profileS: number;
  clusterRuns: number;
  clusterWarmupS: number;
  clusterWindowS: number;
  detectRuns: number;
  detectMinMs: number;
  detectMaxMs: number;
  idleS: number;
}

/** What every section gets: the bench's Redis (and its pid, for CPU readings) and the sizes. */
export interface BenchContext {
  redis: BenchRedis;
  redisPid: number;
  sizes: Sizes;
}

/** One row of the report's targets table. */
export interface Target {
  figure: string;
  target: string;
  value: string;
  met: boolean | undefined;
}

/** What a section's result comes to: rows for the targets table, `FIGURE <name>: <text>` lines. */
export interface Outcome {
  targets: Target[];
  figures: { name: string; text: string }[];
}

// ---------------------------------------------------------------------------------------------
// 1 + 2. Poll throughput and Redis cost per poll (sections/throughput.ts)

export interface RedisCost {
  polls: number;
  commits: number;
  topLevel: number;
  total: number;
  perCommand: { name: string; calls: number; perPoll: number; kind: 'top-level' | 'inside scripts' | 'both' }[];
  /** Script calls (EVALSHA/EVAL): claims, settle batches and the loops' idle checks together. */
  scriptCalls: number;
  evalshaUsPerPoll: number;
}

export interface Throughput {
  daemonRate: number;
  autocannonRate: number;
  autocannonOwnAverage: number;
  ratio: number;
  windowS: number;
  rounds: { daemon: number; autocannon: number; undici: number }[];
  cpuDaemon: { daemon: number; redis: number; api: number };
  cpuAutocannon: { autocannon: number; api: number };
  undiciRate: number;
  cpuUndici: { client: number; api: number };
  daemonCpuUsPerPoll: number;
  redis: RedisCost;
}

// ---------------------------------------------------------------------------------------------
// 3. Intake rate (sections/intake.ts)

export interface Intake {
  n: number;
  lpushMs: number;
  firstToLastMs: number;
  spawnToLastMs: number;
  rate: number;
}

// ---------------------------------------------------------------------------------------------
// 4. Scale: memory per watched run, daemon RSS, claim cost (sections/scale.ts)

export interface ClaimCost {
  size: number;
  medianMs: number;
  p90Ms: number;
  redisUsPerCall: number;
  claimed: number;
}

export interface Scale {
  n: number;
  bytesPerRun: number;
  usedMemoryMB: number;
  intakeRate: number;
  intakeS: number;
  rssMaxMB: number;
  rssPeakMB: number;
  pollRate: number;
  claims: ClaimCost[];
  smallBytesPerRun: { size: number; bytes: number }[];
}

// ---------------------------------------------------------------------------------------------
// 5. Detection lag: the Monte Carlo model (lag-model.ts) and the live check (sections/lag.ts)

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

export interface LiveLag {
  scale: number;
  strategy: string;
  cadence: { initialMs: number; maxMs: number; factor: number; jitter: number };
  runs: number;
  live: LagSummary;
  predicted: LagSummary;
}

export interface Lag {
  mc: MonteCarlo;
  live: LiveLag[];
}

// ---------------------------------------------------------------------------------------------
// 6. Shutdown with runs in flight (sections/shutdown.ts)

export interface Shutdown {
  scenario: string;
  latencyMs: number;
  graceMs: number;
  runs: number;
  inFlightAtSignal: number;
  rampMs: number;
  exitMs: number;
  exitCode: number | null;
  inSchedule: number;
  stillLeased: number;
  dueNow: number;
  events: number;
  dead: number;
  allBack: boolean;
  /** Exit code when the daemon died before the SIGTERM (e.g. out of memory). */
  diedEarly: number | null | undefined;
}

// ---------------------------------------------------------------------------------------------
// 7. Detection at real time, five strategies (sections/detection.ts)

export interface StrategyResult {
  name: string;
  runs: number;
  detected: number;
  p50Ms: number;
  p99Ms: number;
  requestsPerRun: number;
  listRequests: number;
  bytesPerRun: number;
}

export interface Detection {
  runs: number;
  minMs: number;
  maxMs: number;
  listLagMs: number;
  results: StrategyResult[];
  seconds: number;
}

// ---------------------------------------------------------------------------------------------
// 8. An idle replica (sections/idle.ts)

export interface Idle {
  seconds: number;
  commandsPerSecond: number;
  byCommand: [string, number][];
  intakeLatencyMs: number;
}

// ---------------------------------------------------------------------------------------------
// 9. Redis Cluster (sections/cluster.ts)

export interface ClusterBench {
  partitions: number;
  runs: number;
  windowS: number;
  masters: { port: number; commands: number; cpuMs: number }[];
  /** Share of all commands on the busiest master (target <= 45 %). */
  busiestShare: number;
  pollsPerSecond: { cluster: number; standalone: number };
}

// ---------------------------------------------------------------------------------------------
// CPU profile of the daemon (cpu-profile.ts summarises, sections/profile.ts takes it)

export interface ProfileEntry {
  name: string;
  ms: number;
  pct: number;
}

export interface ProfileSummary {
  totalMs: number;
  idlePct: number;
  areas: ProfileEntry[];
  self: ProfileEntry[];
  /** The daemon's own functions (its dist/ or src/ files) by inclusive time. */
  inclusiveOwn: ProfileEntry[];
}

export interface ProfileRun {
  summary: ProfileSummary;
  /** Polls per second under the profiler. */
  rate: number;
}

// ---------------------------------------------------------------------------------------------
// The report (report.ts)

/** Everything BENCHMARKS.md is written from: sections 1–6 always, the others when they ran. */
export interface ReportInput {
  code: string;
  machine: Machine;
  load: [number, number];
  sizes: Sizes;
  /** Node flags given with --node-args (empty: the daemon's own re-exec with the image's). */
  daemonNodeArgs: string[];
  targets: Target[];
  throughput: Throughput;
  intake: Intake;
  scale: Scale;
  lag: Lag;
  shutdown: Shutdown[];
  profile: ProfileRun | undefined;
  cluster: ClusterBench | undefined;
  detection: Detection | undefined;
  idle: Idle | undefined;
  seconds: number;
}
