import { isRunEvent, type AnyEvent } from '../../events/event.ts';
import { summaryOf, type Format, type RenderedRequest, type TargetSpec } from '../format.ts';

/**
 * PagerDuty Events API v2 (`url`: https://events.pagerduty.com/v2/enqueue), one event per
 * request. The routing key comes from the environment variable the target names in
 * `routingKeyEnv`, never from the config file, and is only ever in the request body. A failed
 * run triggers an incident (severity error; expired and not found: warning) with `dedup_key`
 * `letta-run-watcher/<run>/ended`, so a re-sent event does not page twice; a stalled run
 * triggers one keyed `<run>/stalled`, which the run's end resolves. endpoint.failing,
 * endpoint.disabled and delivery.dead trigger per endpoint; endpoint.recovered resolves
 * endpoint.failing. Completed and cancelled runs page no one.
 */
const SEVERITY: Record<string, 'error' | 'warning'> = {
  'run.failed': 'error',
  'run.expired': 'warning',
  'run.not_found': 'warning',
  'run.stalled': 'warning',
  'endpoint.failing': 'warning',
  'endpoint.disabled': 'warning',
  'delivery.dead': 'warning',
};
/** PagerDuty's limits: summary 1024 characters, dedup_key 255. */
const SUMMARY_CHARS = 1024;

function messages(e: AnyEvent): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  const severity = SEVERITY[e.type];
  const summary = summaryOf(e).slice(0, SUMMARY_CHARS);
  if (isRunEvent(e)) {
    const d = e.data;
    const key = (kind: string) => `letta-run-watcher/${d.run_id}/${kind}`;
    if (e.type !== 'run.stalled' && d.watch.stalled_at) out.push({ event_action: 'resolve', dedup_key: key('stalled') });
    if (severity) {
      out.push({
        event_action: 'trigger',
        dedup_key: key(e.type === 'run.stalled' ? 'stalled' : 'ended'),
        payload: {
          summary,
          source: d.agent_id ? `letta agent ${d.agent_id}` : 'letta',
          severity,
          timestamp: e.timestamp,
          component: 'letta-run',
          ...(d.agent_id ? { group: d.agent_id } : {}),
          class: e.type,
          custom_details: { run_id: d.run_id, status: d.status, stop_reason: d.stop_reason, event_id: e.id, metadata: d.metadata, watch: d.watch },
        },
      });
    }
    return out;
  }
  const key = (type: string) => `letta-run-watcher/endpoint/${e.data.target}/${type}`;
  if (e.type === 'endpoint.recovered') return [{ event_action: 'resolve', dedup_key: key('endpoint.failing') }];
  if (severity) {
    out.push({
      event_action: 'trigger',
      dedup_key: key(e.type),
      payload: { summary, source: 'letta-run-watcher', severity, timestamp: e.timestamp, component: 'webhook-delivery', class: e.type, custom_details: e.data },
    });
  }
  return out;
}

export default {
  defaultTypes: ['run.failed', 'run.expired', 'run.not_found', 'run.stalled'],
  resolvesStalled: true,
  render(event, target: TargetSpec): RenderedRequest[] {
    const routingKey = target.routingKey;
    // The config refuses a pagerduty target without one; this is for a target built by hand.
    if (!routingKey) throw new Error(`target ${target.name} has no routing key (routingKeyEnv)`);
    return messages(event).map((m) => ({ url: target.url, contentType: 'application/json', body: JSON.stringify({ routing_key: routingKey, ...m }) }));
  },
} satisfies Format;
