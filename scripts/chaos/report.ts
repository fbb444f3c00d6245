/** The figures and checks of a chaos run, and the text printed at the end. */

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface ChaosReport {
  seed: number;
  elapsedMs: number;
  runs: number;
  replicas: number;
  /** API requests that reached the simulator, and its answers by status ("hung" = never answered). */
  apiRequests: number;
  simulatorByStatus: Record<string, number>;
  /** Faults injected, by kind: 5xx and 429 and hung from simulator stats, malformed from the wire tap. */
  faults: { serverErrors: number; rateLimited: number; hung: number; malformed: number };
  /** API requests whose path was not /v1/runs/{valid id} (nor Letta's /v1/health/ or the list). */
  badApiPaths: number;
  kills: number;
  redisRestarts: number;
  receiverOutageMs: number;
  /** p99 of the lag from a run's end to its event. */
  lagP99Ms: number;
  /** The longest a webhook took after the receiver came back (or after its event, if later). */
  catchUpMs: number;
  events: number;
  duplicatesInStream: number;
  missingEvents: number;
  unexpectedEvents: number;
  wrongEventTypes: number;
  webhook: {
    targets: string[];
    /** Every request that reached the receiver (all targets). */
    received: number;
    /** Requests answered 2xx / failed on purpose. */
    answered2xx: number;
    failedOnPurpose: number;
    /** Distinct webhook-ids per target, and over all targets. */
    distinctIdsByTarget: Record<string, number>;
    distinctIds: number;
    /** 2xx answers beyond the first for the same webhook-id and target (at-least-once). */
    duplicateDeliveries: number;
    /** (event, target) pairs with no 2xx answer. */
    missingDeliveries: number;
    invalidSignatures: number;
  };
  deadLetters: number;
  outboxLeft: number;
  scheduleLeft: number;
  secretsScan: { scannedBytes: number; hits: string[] };
  exitCodes: (number | null)[];
  fatalLines: number;
  checks: Check[];
  ok: boolean;
}

/** The figures of a run, which the checks judge: everything in the report but `checks` and `ok`. */
export type Figures = Omit<ChaosReport, 'checks' | 'ok'>;

export function formatReport(r: ChaosReport): string {
  const row = (k: string, v: string | number) => `  ${k.padEnd(50)}${v}`;
  const w = r.webhook;
  const lines = [
    `chaos run (seed ${r.seed}) in ${(r.elapsedMs / 1000).toFixed(1)} s`,
    row('runs', r.runs),
    row('replicas', r.replicas),
    row('API requests (simulator)', r.apiRequests),
    row('simulator answers by status', JSON.stringify(r.simulatorByStatus)),
    row('faults injected: 5xx', r.faults.serverErrors),
    row('faults injected: 429 with Retry-After', r.faults.rateLimited),
    row('faults injected: hung requests', r.faults.hung),
    row('faults injected: malformed bodies (tap)', r.faults.malformed),
    row('API requests outside /v1/runs/{id}, the list and /v1/health/', r.badApiPaths),
    row('kill -9 of a replica', r.kills),
    row('Redis restarts', r.redisRestarts),
    row('webhook receiver outage', `${(r.receiverOutageMs / 1000).toFixed(1)} s`),
    row('detection lag p99', `${(r.lagP99Ms / 1000).toFixed(2)} s`),
    row('longest webhook wait after the receiver came back', `${(r.catchUpMs / 1000).toFixed(1)} s`),
    row('events in P:events', r.events),
    row('duplicates in stream', r.duplicatesInStream),
    row('missing events', r.missingEvents),
    row('unexpected events', r.unexpectedEvents),
    row('events of the wrong type', r.wrongEventTypes),
    row(`webhook deliveries received (${w.targets.join(', ')})`, w.received),
    row('  answered 2xx / failed on purpose', `${w.answered2xx} / ${w.failedOnPurpose}`),
    row('distinct webhook-ids', `${w.distinctIds} (${Object.entries(w.distinctIdsByTarget).map(([p, n]) => `${p} ${n}`).join(', ')})`),
    row('duplicate deliveries (by webhook-id)', w.duplicateDeliveries),
    row('missing deliveries', w.missingDeliveries),
    row('invalid signatures', w.invalidSignatures),
    row('dead letters', r.deadLetters),
    row('secrets scan', r.secretsScan.hits.length === 0 ? `clean (${(r.secretsScan.scannedBytes / 1e6).toFixed(1)} MB scanned)` : r.secretsScan.hits.join('; ')),
    row('replica exit codes on SIGTERM', r.exitCodes.join(', ')),
    '',
    'checks:',
    ...r.checks.map((c) => `  ${c.ok ? 'PASS' : 'FAIL'}  ${c.name.padEnd(58)}${c.detail}`),
    '',
    r.ok ? 'chaos: all checks passed' : `chaos: ${r.checks.filter((c) => !c.ok).length} check(s) FAILED`,
  ];
  return lines.join('\n');
}
