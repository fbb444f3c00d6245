import { createHash } from 'node:crypto';
import type { Config, WebhookTargetConfig } from '../config.ts';
import { isRunEvent, OPS_EVENT_TYPES, type AnyEvent, type OpsEventType } from '../events/event.ts';
import { decodeTarget, encodeTarget } from '../redis/keys.ts';
import type { Format, TargetSpec } from './format.ts';

/**
 * Webhook targets and which events each gets. Routing happens when an event is committed: a
 * target that does not want an event gets no delivery record, so it costs nothing.
 *   - `types`: event types or families (`run.*`, `endpoint.*`, `delivery.*`, `*`); default
 *     the format's own (alertmanager and pagerduty: failures and stalls) or every run event.
 *     Operator events go only to targets that list them, and never to the endpoint they are
 *     about.
 *   - `stopReasons`: only run events with one of these stop reasons.
 *   - A format that resolves stalls (alertmanager, pagerduty) also gets the end of a run it
 *     was told had stalled, whatever its types, so the stall's alert can resolve.
 * WATCHER_WEBHOOK_URLS targets get every run event in the `event` format.
 */
export interface Target extends TargetSpec {
  /** The outbox's name for it (keys.ts encodeTarget). */
  key: string;
  format: string;
  perRun: boolean;
  types: readonly string[];
  stopReasons: readonly string[] | undefined;
}

export function configuredTargets(config: Config, formats: ReadonlyMap<string, Format>): Target[] {
  const byKey = new Map<string, Target>();
  const fromUrls = config.webhooks.urls.map((url): WebhookTargetConfig => ({ ...PLAIN, url, types: ['run.*'] }));
  for (const t of [...fromUrls, ...config.webhooks.targets]) {
    const name = targetName(t);
    // Names are unique (config.ts refuses a repeated one), so each target gets its own key.
    const key = encodeTarget({ kind: 'configured', name });
    byKey.set(key, {
      ...t,
      key,
      name,
      perRun: false,
      types: t.types ?? formats.get(t.format)?.defaultTypes ?? ['run.*'],
      stopReasons: t.stopReasons,
      routingKey: t.routingKeyEnv === undefined ? undefined : config.secrets.routingKeys[t.routingKeyEnv],
    });
  }
  return [...byKey.values()];
}

/** A configured target's name: its own, or for an unnamed one a hash of its URL. */
export function targetName(target: { url: string; name?: string | undefined }): string {
  return target.name ?? createHash('sha256').update(target.url).digest('hex').slice(0, 12);
}

/** A stored target key as a target: a configured one (if still configured) or a per-run URL. */
export function resolveTarget(key: string, configured: ReadonlyMap<string, Target>): Target | undefined {
  const ref = decodeTarget(key);
  if (ref === undefined) return undefined;
  if (ref.kind === 'configured') return configured.get(key);
  return { ...PLAIN, key, name: 'per-run', url: ref.url, format: ref.format, perRun: true, types: ['run.*'], stopReasons: undefined, routingKey: undefined };
}

/** A target with nothing but a URL: the `event` format and the defaults of webhooks.targets. */
const PLAIN = { format: 'event', headers: {}, labels: {}, resolveAfterMs: 3_600_000, repeatMs: 300_000, source: 'urn:letta-run-watcher' } as const;

export function typeMatches(patterns: readonly string[], type: string): boolean {
  return patterns.some((p) => p === '*' || p === type || (p.endsWith('.*') && type.startsWith(p.slice(0, -1))));
}

/** Whether `target` is sent `event` (see the rules above). */
export function wants(target: Target, event: AnyEvent, formats: ReadonlyMap<string, Format>): boolean {
  if (!isRunEvent(event)) return typeMatches(target.types, event.type) && event.data.target !== target.name;
  if (typeMatches(target.types, event.type) && (target.stopReasons === undefined || target.stopReasons.includes(event.data.stop_reason ?? ''))) return true;
  return event.type !== 'run.stalled' && event.data.watch.stalled_at !== null && formats.get(target.format)?.resolvesStalled === true && typeMatches(target.types, 'run.stalled');
}

/** The routing of events to configured targets, by key. */
export function makeRouter(targets: readonly Target[], formats: ReadonlyMap<string, Format>) {
  return {
    /** The configured target keys `event` is recorded for. */
    targetsFor: (event: AnyEvent): string[] => targets.filter((t) => wants(t, event, formats)).map((t) => t.key),
    /** The target keys taking each kind of operator event (each but those about itself). */
    opsSubscribers: (): Record<OpsEventType, string[]> =>
      Object.fromEntries(OPS_EVENT_TYPES.map((type) => [type, targets.filter((t) => typeMatches(t.types, type)).map((t) => t.key)])) as Record<OpsEventType, string[]>,
  };
}

export type Router = ReturnType<typeof makeRouter>;
