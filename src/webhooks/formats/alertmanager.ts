import { isRunEvent, type OpsEvent, type WatchEvent } from '../../events/event.ts';
import { summaryOf, type Format, type RenderedRequest, type TargetSpec } from '../format.ts';

/**
 * Alertmanager's API: `POST <url>/api/v2/alerts`, `url` being Alertmanager's base URL. An
 * alert is known by its labels: `alertname`, `run_id`, `agent_id`, `status`, `stop_reason`
 * (empty ones left out) and the target's static `labels`. Following Alertmanager's client
 * contract (an alert that is not re-sent resolves at its endsAt):
 *   - a failed, expired or not-found run is a one-off alert with a bounded `endsAt`
 *     (`resolveAfterMs` after detection, default 1 h); completed and cancelled runs raise none;
 *   - a stalled run's alert (labels `alertname`, `run_id`, `agent_id`) is re-sent every
 *     `repeatMs` (default 5 minutes) while the run stays stalled, each time active for three
 *     more, and resolved (`endsAt` = now, same labels) by the run's end, whatever it was;
 *   - endpoint.failing, endpoint.disabled and delivery.dead raise alerts labelled `target`;
 *     endpoint.recovered resolves endpoint.failing.
 */
const NAMES: Record<string, string> = {
  'run.failed': 'LettaRunFailed',
  'run.expired': 'LettaRunExpired',
  'run.not_found': 'LettaRunNotFound',
  'run.stalled': 'LettaRunStalled',
  'endpoint.failing': 'LettaWatcherEndpointFailing',
  'endpoint.disabled': 'LettaWatcherEndpointDisabled',
  'delivery.dead': 'LettaWatcherDeliveryDead',
};
/** Annotations are for people: the run's details are cut here. */
const DETAILS_CHARS = 16_384;

interface Alert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAt: string;
  endsAt: string;
}

function labels(target: TargetSpec, alertname: string, own: Record<string, string | null>): Record<string, string> {
  const out: Record<string, string> = { ...target.labels, alertname };
  for (const [k, v] of Object.entries(own)) if (v) out[k] = v;
  return out;
}

function runAlerts(e: WatchEvent, target: TargetSpec, now: Date): Alert[] {
  const d = e.data;
  const details = JSON.stringify({ run: d.run, metadata: d.metadata, watch: d.watch }).slice(0, DETAILS_CHARS);
  const annotations = { summary: summaryOf(e), description: details, event_id: e.id };
  const stalledLabels = labels(target, 'LettaRunStalled', { run_id: d.run_id, agent_id: d.agent_id });
  if (e.type === 'run.stalled') {
    // Active until well past the next re-send; the run's end resolves it.
    return [{ labels: stalledLabels, annotations, startsAt: d.watch.stalled_at ?? e.timestamp, endsAt: new Date(now.getTime() + 3 * target.repeatMs).toISOString() }];
  }
  const alerts: Alert[] = [];
  if (d.watch.stalled_at) {
    alerts.push({ labels: stalledLabels, annotations: { summary: `${summaryOf(e)}; no longer stalled` }, startsAt: d.watch.stalled_at, endsAt: now.toISOString() });
  }
  const name = NAMES[e.type];
  if (name) {
    const own = { run_id: d.run_id, agent_id: d.agent_id, status: d.status, stop_reason: d.stop_reason };
    alerts.push({ labels: labels(target, name, own), annotations, startsAt: e.timestamp, endsAt: new Date(Date.parse(e.timestamp) + target.resolveAfterMs).toISOString() });
  }
  return alerts;
}

function opsAlerts(e: OpsEvent, target: TargetSpec, now: Date): Alert[] {
  if (e.type === 'endpoint.recovered') {
    const failing = labels(target, 'LettaWatcherEndpointFailing', { target: e.data.target });
    return [{ labels: failing, annotations: { summary: summaryOf(e) }, startsAt: e.timestamp, endsAt: now.toISOString() }];
  }
  const name = NAMES[e.type] as string;
  const until = new Date(Date.parse(e.timestamp) + target.resolveAfterMs).toISOString();
  return [{ labels: labels(target, name, { target: e.data.target }), annotations: { summary: summaryOf(e), description: e.data.detail }, startsAt: e.timestamp, endsAt: until }];
}

export default {
  defaultTypes: ['run.failed', 'run.expired', 'run.not_found', 'run.stalled'],
  repeatsStalled: true,
  resolvesStalled: true,
  render(event, target, o): RenderedRequest[] {
    const alerts = isRunEvent(event) ? runAlerts(event, target, o.now) : opsAlerts(event, target, o.now);
    if (alerts.length === 0) return [];
    return [{ url: `${target.url.replace(/\/+$/, '')}/api/v2/alerts`, contentType: 'application/json', body: JSON.stringify(alerts) }];
  },
} satisfies Format;
