import type { Logger } from 'pino';
import type { ApiGate } from './api-gate.ts';
import type { Clock } from '../clock.ts';
import { isDaemonError } from '../errors.ts';
import type { LettaClient } from '../letta/client.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { RedisHealth } from '../redis/health.ts';
import type { StoreContext } from '../redis/context.ts';
import type { RunStore } from './runs.ts';

/**
 * Active-set reconciliation: once per `everyMs`, one replica of the fleet (whoever takes the
 * lease P:reconcile-lease) fetches one page of the organisation's active runs, newest first,
 * and each partition compares it with what it watches (lua/reconcile.lua): a run the page
 * should hold but does not is polled now; a run it holds has its next poll pushed out, up to
 * the safety gap. The page is a hint: only GET /v1/runs/{id} decides an event. One page, no
 * cursor: Letta's cursors are unreliable. A server that cannot list runs (404, 405, 422) turns
 * reconciliation off, with one log line; polling goes on.
 */
export interface Reconciler {
  start(): void;
  stop(): Promise<void>;
  /** False once the API has shown it cannot list runs. */
  readonly enabled: boolean;
}

/** The fetch lease: this much shorter than the interval, and never under the floor. */
const LEASE_SHORTFALL_MS = 50;
const MIN_LEASE_MS = 100;
/** A list request may take this many intervals before it is given up. */
const LIST_TIMEOUT_INTERVALS = 10;

export function makeReconciler(deps: {
  client: LettaClient;
  runs: RunStore;
  ctx: StoreContext;
  everyMs: number;
  safetyGapMs: number;
  listLimit: number;
  gate: ApiGate;
  clock: Clock;
  log: Logger;
  metrics: Metrics;
  health: RedisHealth;
  /** Whether the fleet watches anything (an idle fleet asks Letta nothing). */
  watching: () => boolean;
  /** Runs in `partition` were made due now. */
  onDue: (partition: number) => void;
}): Reconciler {
  const stopping = new AbortController();
  let done: Promise<void> | undefined;
  let enabled = true;
  const { layout } = deps.ctx;
  // Held a little less than the interval, so across the fleet one page is fetched per interval.
  const leaseMs = Math.max(MIN_LEASE_MS, deps.everyMs - LEASE_SHORTFALL_MS);

  async function pass(): Promise<void> {
    const lease = await deps.ctx.client.set(layout.reconcileLease, deps.ctx.replica, 'PX', leaseMs, 'NX');
    if (lease !== 'OK') return;
    const page = await deps.client.listActive(deps.listLimit, AbortSignal.any([stopping.signal, AbortSignal.timeout(deps.everyMs * LIST_TIMEOUT_INTERVALS)]));
    if (page.kind === 'unsupported') {
      enabled = false;
      deps.metrics.reconcileEnabled.set(0);
      deps.log.warn({ status: page.status }, `the Letta API does not list runs (GET /v1/runs/ answered ${page.status}); reconciliation is off, per-run polling goes on`);
      return;
    }
    deps.metrics.listBytes.inc(page.bytes);
    const byPartition = layout.partitions.map(() => [] as string[]);
    for (const run of page.runs) byPartition[layout.partitionOf(run.id).index]?.push(run.id);
    // A full page is not the whole set: only runs created after its oldest can be decided.
    const times = page.runs.map((r) => r.createdAt).filter((t): t is number => t !== undefined);
    const oldest = page.runs.length >= deps.listLimit && times.length > 0 ? Math.min(...times) : undefined;
    for (const p of layout.partitions) {
      const r = await deps.runs.reconcile(p.index, byPartition[p.index] ?? [], oldest, deps.safetyGapMs);
      if (r.dueNow > 0) {
        deps.metrics.reconciled.inc({ action: 'due_now' }, r.dueNow);
        deps.onDue(p.index);
      }
      if (r.pushed > 0) deps.metrics.reconciled.inc({ action: 'pushed_out' }, r.pushed);
    }
  }

  async function loop(): Promise<void> {
    while (!stopping.signal.aborted && enabled) {
      await deps.clock.sleep(deps.everyMs, stopping.signal).catch(() => {});
      if (stopping.signal.aborted || !deps.gate.open || !deps.watching()) continue;
      try {
        await pass();
        deps.metrics.reconcilePasses.inc({ result: 'ok' });
        deps.health.recovered('reconciliation');
      } catch (err) {
        if (stopping.signal.aborted) break;
        deps.metrics.reconcilePasses.inc({ result: 'error' });
        // An API error shows in the API error metrics; a Redis one is reported here.
        if (isDaemonError(err) && err.code.startsWith('ERR_API')) deps.log.debug({ err }, 'reconciliation pass failed; per-run polling goes on');
        else deps.health.report('reconciliation', err);
      }
    }
  }

  return {
    start() {
      deps.metrics.reconcileEnabled.set(1);
      done ??= loop();
    },
    async stop() {
      stopping.abort();
      await done;
    },
    get enabled() {
      return enabled;
    },
  };
}
