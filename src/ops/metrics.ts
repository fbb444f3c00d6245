import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { DaemonError } from '../errors.ts';
import type { ApiGateState } from '../polling/api-gate.ts';

/**
 * Prometheus metrics, one registry per daemon (tests run several in one process). Names carry
 * the `letta_watcher_` prefix; labels are small closed sets, never a run ID.
 */
export interface GaugeReadings {
  watched: number;
  due: number;
  backlog: number;
  dead: number;
  intake: number;
  endpointsFailing: number;
}

/**
 * `readGauges` reads the Redis gauges (one read per scrape feeds them all); `onGaugeError` hears
 * when that read fails, and the gauges then read NaN rather than a stale or zero value.
 */
export function makeMetrics(readGauges?: () => Promise<GaugeReadings>, onGaugeError?: (err: unknown) => void) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'letta_watcher_' });

  let cached: Promise<GaugeReadings> | undefined;
  // One Redis read per scrape feeds all the gauges below, and one failure is reported once.
  const snapshot = () =>
    (cached ??= (readGauges ?? (async () => ({ watched: 0, due: 0, backlog: 0, dead: 0, intake: 0, endpointsFailing: 0 })))()
      .catch((err: unknown) => {
        onGaugeError?.(err);
        throw err;
      })
      .finally(() => {
        setImmediate(() => (cached = undefined));
      }));
  const redisGauge = (name: string, help: string, pick: (s: GaugeReadings) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        try {
          this.set(pick(await snapshot()));
        } catch {
          this.set(Number.NaN);
        }
      },
    });

  return {
    registry,
    polls: new Counter({ name: 'letta_watcher_polls_total', help: 'Polls of GET /v1/runs/{id} by outcome', labelNames: ['outcome'] as const, registers: [registry] }),
    pollDuration: new Histogram({
      name: 'letta_watcher_poll_duration_seconds',
      help: 'Time for one poll, retries included',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    apiErrors: new Counter({ name: 'letta_watcher_api_errors_total', help: 'Failed API attempts by class', labelNames: ['class'] as const, registers: [registry] }),
    intake: new Counter({ name: 'letta_watcher_intake_total', help: 'Intake entries by result', labelNames: ['result'] as const, registers: [registry] }),
    events: new Counter({ name: 'letta_watcher_events_total', help: 'Run events committed by type', labelNames: ['type'] as const, registers: [registry] }),
    opsEvents: new Counter({
      name: 'letta_watcher_ops_events_total',
      help: 'Operator events raised about webhook delivery (endpoint.failing, endpoint.recovered, endpoint.disabled, delivery.dead)',
      labelNames: ['type'] as const,
      registers: [registry],
    }),
    detectionLag: new Histogram({
      name: 'letta_watcher_detection_lag_seconds',
      help: "From the run's completed_at to its event",
      buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900],
      registers: [registry],
    }),
    leasesLost: new Counter({ name: 'letta_watcher_leases_lost_total', help: 'Settles refused because another replica holds the run', registers: [registry] }),
    deliveries: new Counter({ name: 'letta_watcher_webhook_deliveries_total', help: 'Webhook attempts by outcome', labelNames: ['outcome'] as const, registers: [registry] }),
    deliveryDuration: new Histogram({
      name: 'letta_watcher_webhook_duration_seconds',
      help: 'Time for one webhook attempt',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15],
      registers: [registry],
    }),
    deadLetters: new Counter({ name: 'letta_watcher_dead_letters_total', help: 'Entries this replica wrote to the dead-letter list, by kind', labelNames: ['kind'] as const, registers: [registry] }),
    authPaused: new Gauge({ name: 'letta_watcher_auth_paused', help: '1 while polling is paused by 401/403 from the API', registers: [registry] }),
    notLetta: new Gauge({ name: 'letta_watcher_base_url_not_letta', help: '1 while polling is paused because LETTA_BASE_URL does not answer like a Letta API', registers: [registry] }),
    loopStalls: new Counter({ name: 'letta_watcher_loop_stalls_total', help: 'Health checks that found a loop stalled', registers: [registry] }),
    reconcileEnabled: new Gauge({ name: 'letta_watcher_reconcile_enabled', help: '1 while reconciliation with the list of active runs is on (0 when off, or the API cannot list runs)', registers: [registry] }),
    reconcilePasses: new Counter({ name: 'letta_watcher_reconcile_passes_total', help: 'Reconciliation passes this replica made, by result', labelNames: ['result'] as const, registers: [registry] }),
    reconciled: new Counter({ name: 'letta_watcher_reconciled_runs_total', help: 'Runs reconciliation made due now or pushed out', labelNames: ['action'] as const, registers: [registry] }),
    listBytes: new Counter({ name: 'letta_watcher_list_bytes_total', help: 'Bytes of the lists of active runs this replica fetched', registers: [registry] }),
    callbackHints: new Counter({ name: 'letta_watcher_callback_hints_total', help: "Letta callbacks received at /callbacks/letta, by result", labelNames: ['result'] as const, registers: [registry] }),
    apiBudget: new Gauge({ name: 'letta_watcher_api_budget_rps', help: "The fleet's current API budget in requests per second (WATCHER_API_RPS; lowered after a 429)", registers: [registry] }),
    redisErrors: new Counter({ name: 'letta_watcher_redis_errors_total', help: 'Redis failures seen by the loops, gauges and probes, by cause', labelNames: ['cause'] as const, registers: [registry] }),
    eventsDroppedUnread: new Counter({
      name: 'letta_watcher_events_dropped_unread_total',
      help: 'Events the stream hard cap dropped although a consumer group had not read or acknowledged them',
      registers: [registry],
    }),
    runsWatched: redisGauge('letta_watcher_runs_watched', 'Runs in the watch schedule (all replicas)', (s) => s.watched),
    runsDue: redisGauge('letta_watcher_runs_due', 'Runs due for a poll now (all replicas)', (s) => s.due),
    intakeDepth: redisGauge('letta_watcher_intake_depth', 'Entries waiting in the intake list', (s) => s.intake),
    webhookBacklog: redisGauge('letta_watcher_webhook_backlog', 'Webhook deliveries not yet done', (s) => s.backlog),
    deadLetterDepth: redisGauge('letta_watcher_dead_letter_depth', 'Entries in the dead-letter list', (s) => s.dead),
    endpointsFailing: redisGauge('letta_watcher_endpoints_failing', 'Webhook endpoints announced failing (endpoint.failing) and not yet recovered (all replicas)', (s) => s.endpointsFailing),
  };
}

export type Metrics = ReturnType<typeof makeMetrics>;

/**
 * The `class` label of letta_watcher_api_errors_total: the HTTP status for a status error, the
 * error code for everything else (a 200 whose body is too large or not a Run is no "200" error).
 */
export function apiErrorClass(err: DaemonError): string {
  return err.code === 'ERR_API_STATUS' ? String(err.status) : err.code;
}

/** The pause gauges, from the API gate's state. */
export function showApiGate(metrics: Metrics, state: ApiGateState): void {
  metrics.authPaused.set(state.state === 'paused' && state.reason === 'credentials' ? 1 : 0);
  metrics.notLetta.set(state.state === 'paused' && state.reason === 'not-letta' ? 1 : 0);
}
