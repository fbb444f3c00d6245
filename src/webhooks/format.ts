import { existsSync, readdirSync } from 'node:fs';
import type { AnyEvent, WatchEvent } from '../events/event.ts';

/**
 * Webhook formats: one module per format in formats/, each with one function from an event to
 * the request its target wants. A format's name is its file's name, so adding a format touches
 * no other file: the daemon loads every module in the folder, and the config accepts any name
 * that has one.
 */
export interface TargetSpec {
  name: string;
  url: string;
  headers: Readonly<Record<string, string>>;
  /** Static labels (Alertmanager). */
  labels: Readonly<Record<string, string>>;
  /** PagerDuty's routing key, read from the environment variable the target names. */
  routingKey: string | undefined;
  /** How long a one-off alert stays active before it resolves on its own (Alertmanager). */
  resolveAfterMs: number;
  /** How often a stalled run's alert is re-sent while it stays stalled (Alertmanager). */
  repeatMs: number;
  /** The CloudEvents `source`. */
  source: string;
}

export interface RenderedRequest {
  url: string;
  contentType: string;
  body: string;
}

export interface RenderOptions {
  maxBodyBytes: number;
  now: Date;
}

export interface Format {
  /**
   * The requests for `event`, sent in order, all of which must get a 2xx for the delivery to
   * be done; none when this format has nothing to send for it (then the delivery is done).
   */
  render(event: AnyEvent, target: TargetSpec, o: RenderOptions): RenderedRequest[];
  /** The `types` a target of this format gets when it lists none (default: every run event). */
  defaultTypes?: readonly string[];
  /**
   * While a run stays stalled, its run.stalled delivery is sent again every target.repeatMs
   * (Alertmanager resolves an alert that is not re-sent). The run's end stops the repeats.
   */
  repeatsStalled?: boolean;
  /** A run that stalled has its terminal event sent here even if the target's types leave it out: it resolves the stall. */
  resolvesStalled?: boolean;
}

const DIR = new URL('./formats/', import.meta.url);
const EXTENSIONS = ['.js', '.ts'];

/** Whether a format of this name exists (a module in formats/). */
export function formatExists(name: string): boolean {
  return formatNames().includes(name);
}

/** The names of the formats in formats/. */
export function formatNames(): string[] {
  const names = new Set<string>();
  for (const file of readdirSync(DIR)) {
    const m = /^([a-z][a-z0-9-]*)\.(js|ts)$/.exec(file);
    if (m?.[1] && !file.endsWith('.d.ts')) names.add(m[1]);
  }
  return [...names].sort();
}

/** Every format in formats/, by name. */
export async function loadFormats(): Promise<ReadonlyMap<string, Format>> {
  const out = new Map<string, Format>();
  for (const name of formatNames()) {
    const file = EXTENSIONS.map((ext) => new URL(`${name}${ext}`, DIR)).find((u) => existsSync(u)) as URL;
    const mod = (await import(file.href)) as { default?: Format };
    if (typeof mod.default?.render !== 'function') throw new Error(`webhook format module ${name} has no default export with a render function`);
    out.set(name, mod.default);
  }
  return out;
}

/** Bulky Run fields dropped first when a body is over the size cap. */
const BULKY_RUN_FIELDS = ['request_config', 'metadata', 'callback_error'];

/**
 * The event as it fits in `maxBytes` of JSON: over it, the bulky parts of `data.run` go, then
 * all of the run but its identifying fields and the metadata; `data.truncated` says what went.
 */
export function fitEvent<E extends AnyEvent>(event: E, maxBytes: number): E {
  if (Buffer.byteLength(JSON.stringify(event)) <= maxBytes || !('run' in event.data)) return event;
  const e = event as WatchEvent;
  const dropped: string[] = [];
  const run = e.data.run ? { ...e.data.run } : null;
  if (run) {
    for (const f of BULKY_RUN_FIELDS) {
      const fields = run as Record<string, unknown>;
      if (fields[f] == null) continue;
      delete fields[f];
      dropped.push(`run.${f}`);
    }
  }
  let fitted: WatchEvent = { ...e, data: { ...e.data, run, truncated: dropped } as WatchEvent['data'] };
  if (Buffer.byteLength(JSON.stringify(fitted)) > maxBytes) {
    const slim = run ? { id: run.id, agent_id: run.agent_id, status: run.status, stop_reason: run.stop_reason, completed_at: run.completed_at } : null;
    dropped.push('run.*', 'metadata');
    fitted = { ...e, data: { ...e.data, run: slim, metadata: null, truncated: dropped } as WatchEvent['data'] };
  }
  return fitted as E;
}

/** Seconds the run took, from its own numbers (Letta's total_duration_ns), or undefined. */
export function runSeconds(e: WatchEvent): number | undefined {
  const ns = e.data.run?.total_duration_ns;
  return typeof ns === 'number' ? ns / 1e9 : undefined;
}

/** One line on the event, for text-first formats (Slack, summaries). */
export function summaryOf(e: AnyEvent): string {
  if (!('run_id' in e.data)) {
    const d = e.data;
    switch (e.type) {
      case 'endpoint.failing':
        return `Webhook endpoint ${d.target} is failing: ${d.consecutive_failures} deliveries in a row got no 2xx (last: ${d.last_status ?? 'no answer'})`;
      case 'endpoint.recovered':
        return `Webhook endpoint ${d.target} answers 2xx again`;
      case 'endpoint.disabled':
        return `Webhook endpoint ${d.target} answered 410 Gone: deliveries to it stop until a dead letter is replayed`;
      default:
        return `A webhook delivery to ${d.target} was dead-lettered: ${d.detail}`;
    }
  }
  const d = (e as WatchEvent).data;
  const secs = runSeconds(e as WatchEvent);
  const took = secs === undefined ? '' : ` after ${secs.toFixed(1)} s`;
  const why = d.stop_reason ? ` (${d.stop_reason})` : '';
  switch (e.type) {
    case 'run.completed':
      return `Letta run ${d.run_id} completed${why}${took}`;
    case 'run.failed':
      return `Letta run ${d.run_id} failed${why}${took}`;
    case 'run.cancelled':
      return `Letta run ${d.run_id} was cancelled${took}`;
    case 'run.not_found':
      return `Letta run ${d.run_id} was not found by the API`;
    case 'run.expired':
      return `Letta run ${d.run_id} was still not finished when its watch ran out`;
    default:
      return `Letta run ${d.run_id} is stalled: still ${d.status ?? 'running'} since ${d.run?.created_at ?? d.watch.enqueued_at}`;
  }
}
