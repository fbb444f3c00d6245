import type { Check, Figures } from './report.ts';

/** Evidence beyond the figures, quoted in a failing check's detail. */
export interface Evidence {
  /** The first dead letter, as stored (undefined when there is none). */
  firstDeadLetter: string | undefined;
  /** API paths the tap saw outside /v1/runs/{id}, the list and /v1/health/ (the first 100). */
  badPaths: readonly string[];
}

/** The pass/fail checks of a chaos run, in the order the report prints them. */
export function runChecks(r: Figures, evidence: Evidence): Check[] {
  const checks: Check[] = [];
  const check = (name: string, ok: boolean, detail: string) => checks.push({ name, ok, detail });
  const { webhook: w, secretsScan } = r;
  check('faults injected (each kind)', Object.values(r.faults).every((n) => n > 0), JSON.stringify(r.faults));
  check('replicas killed', r.kills > 0, String(r.kills));
  check('Redis restarted once', r.redisRestarts === 1, String(r.redisRestarts));
  check('duplicates in stream = 0', r.duplicatesInStream === 0, String(r.duplicatesInStream));
  check('missing events = 0', r.missingEvents === 0, String(r.missingEvents));
  check('unexpected events = 0', r.unexpectedEvents === 0, String(r.unexpectedEvents));
  check('event type = run outcome', r.wrongEventTypes === 0, `${r.wrongEventTypes} wrong`);
  check('events = runs', r.events === r.runs, `${r.events} of ${r.runs}`);
  check('missing deliveries = 0', w.missingDeliveries === 0, String(w.missingDeliveries));
  check('invalid signatures = 0', w.invalidSignatures === 0, String(w.invalidSignatures));
  const dead = evidence.firstDeadLetter;
  check('dead letters = 0', r.deadLetters === 0, `${r.deadLetters}${dead ? `: ${dead.slice(0, 300)}` : ''}`);
  check('outbox and schedule empty', r.outboxLeft === 0 && r.scheduleLeft === 0, `outbox ${r.outboxLeft}, schedule ${r.scheduleLeft}`);
  check('API requests only to /v1/runs/{id}, the list and /v1/health/', r.badApiPaths === 0, evidence.badPaths.slice(0, 5).join(' '));
  check('no secret in logs, events, dead letters, status, webhooks', secretsScan.hits.length === 0, secretsScan.hits.join('; ') || `${secretsScan.scannedBytes} bytes scanned`);
  check('replicas exit 0 on SIGTERM', r.exitCodes.every((c) => c === 0), r.exitCodes.join(','));
  check('no fatal log lines', r.fatalLines === 0, String(r.fatalLines));
  check('p99 detection lag ≤ 20 s', r.lagP99Ms <= 20_000, `${(r.lagP99Ms / 1000).toFixed(2)} s`);
  check('every webhook within 60 s of the receiver coming back', r.catchUpMs <= 60_000, `${(r.catchUpMs / 1000).toFixed(1)} s at most`);
  return checks;
}
