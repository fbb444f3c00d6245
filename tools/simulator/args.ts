import { parseArgs } from 'node:util';
import { DaemonError } from '../../src/errors.ts';
import type { FaultOptions, SimulatorOptions } from './server.ts';

export const simulatorUsage = `Usage: npm run simulate -- [options]     (node tools/simulator/main.ts [options])

Serves a Letta-compatible GET /v1/runs/{run_id}, GET /v1/runs/ (the list) and GET /v1/health/
for demos, tests and benchmarks, and sends Letta's callback for runs created with a callback_url.
Control endpoints: POST /v1/_sim/runs, POST /v1/_sim/faults, GET /v1/_sim/stats.

Options:
  --port N               Port to listen on (default 8283; 0 = any free port)
  --host H               Interface to bind (default 127.0.0.1)
  --initial-runs N       Runs to create at start (default 0)
  --duration-ms MIN-MAX  Duration range of new runs in ms, or a single N (default 2000-8000)
  --error-rate F         Fraction 0..1 of run requests answered 500/502/503
  --rate-limit-rate F    Fraction answered 429 with Retry-After
  --retry-after S        Retry-After seconds sent with 429 (default 1)
  --conflict-rate F      Fraction answered 409 "database is locked"
  --latency-ms N         Delay added before every run answer
  --hang-rate F          Fraction of run requests never answered
  --malformed-rate F     Fraction answered 200 with a broken body
  --quirk-rate F         Fraction of terminal runs shown with null stop_reason/completed_at
  --callback-drop-rate F Fraction of Letta callbacks never sent (runs created with a callback_url)
  --list-lag-ms N        How far GET /v1/runs/ lags behind GET /v1/runs/{run_id}
  --api-key-env NAME     Require "Authorization: Bearer <key>", the key read from env var NAME
`;

const FLAG_OPTIONS = {
  port: { type: 'string' },
  host: { type: 'string' },
  'initial-runs': { type: 'string' },
  'duration-ms': { type: 'string' },
  'error-rate': { type: 'string' },
  'rate-limit-rate': { type: 'string' },
  'retry-after': { type: 'string' },
  'conflict-rate': { type: 'string' },
  'latency-ms': { type: 'string' },
  'hang-rate': { type: 'string' },
  'malformed-rate': { type: 'string' },
  'quirk-rate': { type: 'string' },
  'callback-drop-rate': { type: 'string' },
  'list-lag-ms': { type: 'string' },
  'api-key-env': { type: 'string' },
} as const;

const RATE_FLAGS = [
  ['error-rate', 'errorRate'],
  ['rate-limit-rate', 'rateLimitRate'],
  ['conflict-rate', 'conflictRate'],
  ['hang-rate', 'hangRate'],
  ['malformed-rate', 'malformedRate'],
  ['quirk-rate', 'quirkRate'],
  ['callback-drop-rate', 'callbackDropRate'],
] as const;

function usageError(flag: string, value: string, expected: string): DaemonError {
  return new DaemonError('ERR_USAGE', `--${flag}: expected ${expected}, got ${JSON.stringify(value)}`);
}

function parseInteger(flag: string, value: string, min: number, max: number): number {
  if (!/^\d+$/.test(value)) throw usageError(flag, value, `an integer ${min}-${max}`);
  const n = Number(value);
  if (n < min || n > max) throw usageError(flag, value, `an integer ${min}-${max}`);
  return n;
}

function parseRate(flag: string, value: string): number {
  // Plain decimals only: Number() would also take '', '0x1' and '1e-1'.
  if (!/^(\d+(\.\d*)?|\.\d+)$/.test(value)) throw usageError(flag, value, 'a number between 0 and 1');
  const n = Number(value);
  if (n > 1) throw usageError(flag, value, 'a number between 0 and 1');
  return n;
}

function parseDurationRange(flag: string, value: string): [number, number] {
  const m = /^(\d+)(?:-(\d+))?$/.exec(value);
  if (!m) throw usageError(flag, value, 'MIN-MAX or N (milliseconds)');
  const min = Number(m[1]);
  const max = m[2] === undefined ? min : Number(m[2]);
  if (max < min) throw usageError(flag, value, 'MIN-MAX with MIN <= MAX');
  return [min, max];
}

function parseFlags(argv: string[]) {
  try {
    return parseArgs({ args: argv, options: FLAG_OPTIONS, strict: true, allowPositionals: false }).values;
  } catch (err) {
    // parseArgs' own messages already name the flag ("Unknown option '--prot'").
    throw new DaemonError('ERR_USAGE', err instanceof Error ? err.message : String(err), { cause: err });
  }
}

/** Parses the flags after `letta-run-watcher simulate`. Throws ERR_USAGE naming the bad flag. */
export function parseSimulatorArgs(argv: string[], env: Record<string, string | undefined>): SimulatorOptions {
  const values = parseFlags(argv);

  const options: SimulatorOptions = { initialRuns: 0 };
  if (values.port !== undefined) options.port = parseInteger('port', values.port, 0, 65535);
  if (values.host !== undefined) {
    if (values.host.trim() === '') throw usageError('host', values.host, 'a host name or address');
    options.host = values.host;
  }
  if (values['initial-runs'] !== undefined) options.initialRuns = parseInteger('initial-runs', values['initial-runs'], 0, 1_000_000);
  if (values['duration-ms'] !== undefined) options.durationMs = parseDurationRange('duration-ms', values['duration-ms']);

  const faults: Partial<FaultOptions> = {};
  for (const [flag, key] of RATE_FLAGS) {
    const raw = values[flag];
    if (raw !== undefined) faults[key] = parseRate(flag, raw);
  }
  if (values['retry-after'] !== undefined) {
    faults.retryAfterSeconds = parseInteger('retry-after', values['retry-after'], 0, 86_400);
  }
  if (values['latency-ms'] !== undefined) {
    faults.latencyMs = parseInteger('latency-ms', values['latency-ms'], 0, 3_600_000);
  }
  if (values['list-lag-ms'] !== undefined) {
    faults.listLagMs = parseInteger('list-lag-ms', values['list-lag-ms'], 0, 3_600_000);
  }
  if (Object.keys(faults).length > 0) options.faults = faults;

  const keyEnv = values['api-key-env'];
  if (keyEnv !== undefined) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(keyEnv)) throw usageError('api-key-env', keyEnv, 'an environment variable name');
    const key = env[keyEnv];
    // Name the variable, never echo its value.
    if (key === undefined || key === '') {
      throw new DaemonError('ERR_USAGE', `--api-key-env: environment variable ${keyEnv} is not set or empty`);
    }
    options.apiKey = key;
  }
  return options;
}
