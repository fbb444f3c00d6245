import { readdirSync } from 'node:fs';
import { HTTP, ValidationError, type CloudEvent } from 'cloudevents';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildEvent, type AnyEvent, type EventInput, type OpsEvent, type WatchEvent } from '../../src/events/event.ts';
import type { Run } from '../../src/letta/client.ts';
import { formatNames, loadFormats, type Format, type RenderedRequest, type TargetSpec } from '../../src/webhooks/format.ts';

/**
 * Each format's body, checked against what its receiver documents: CloudEvents through the
 * official SDK's parser and validator; Slack and PagerDuty field by field (there is no local
 * server for them); Alertmanager's is checked against a real Alertmanager in alerting.test.ts.
 */
const RUN_ID = 'run-5b1c2a3e-4f5d-4e6a-9b7c-8d9e0f1a2b3c';
const CREATED = '2026-12-01T09:00:00.000000';
const RUN: Run = {
  id: RUN_ID,
  agent_id: 'agent-7f3c',
  status: 'failed',
  stop_reason: 'llm_api_error',
  created_at: CREATED,
  completed_at: '2026-12-01T09:02:05.500000',
  total_duration_ns: 125_500_000_000,
};
const ROUTING_KEY = 'R0UT1NGK3Y0123456789abcdefabcdef';

function event(over: Partial<EventInput> = {}): WatchEvent {
  return buildEvent({
    type: 'run.failed',
    runId: RUN_ID,
    run: RUN,
    metadata: { ticket: 'T-1' },
    enqueuedAt: Date.parse('2026-12-01T09:00:01Z'),
    detectedAt: Date.parse('2026-12-01T09:02:06Z'),
    polls: 4,
    ...over,
  });
}

const OPS: OpsEvent = {
  id: 'evt_0123456789abcdef0123456789abcdef',
  type: 'endpoint.failing',
  timestamp: '2026-12-01T09:05:00.000Z',
  data: { target: 'billing', consecutive_failures: 5, last_status: 503, detail: 'answered HTTP 503', event_id: null, suppressed: 0 },
};

function target(over: Partial<TargetSpec> = {}): TargetSpec {
  return { name: 't', url: 'https://receiver.test/hook', headers: {}, labels: {}, routingKey: undefined, resolveAfterMs: 3_600_000, repeatMs: 300_000, source: 'urn:letta-run-watcher', ...over };
}

const NOW = new Date('2026-12-01T09:02:07Z');
let formats: ReadonlyMap<string, Format>;
beforeAll(async () => {
  formats = await loadFormats();
});
function render(name: string, e: AnyEvent, t: TargetSpec = target(), maxBodyBytes = 262_144): RenderedRequest[] {
  const f = formats.get(name);
  if (!f) throw new Error(`no format ${name}`);
  return f.render(e, t, { maxBodyBytes, now: NOW });
}
const json = (r: RenderedRequest | undefined) => JSON.parse(r?.body ?? 'null') as Record<string, unknown>;

describe('the format modules', () => {
  it('are the files of src/webhooks/formats: a new file is a new format, nothing else to touch', async () => {
    const files = readdirSync(new URL('../../src/webhooks/formats/', import.meta.url)).map((f) => f.replace(/\.ts$/, ''));
    expect(formatNames()).toEqual(files.sort());
    expect([...formats.keys()].sort()).toEqual(['alertmanager', 'cloudevents', 'event', 'letta', 'pagerduty', 'slack']);
  });
});

describe('cloudevents', () => {
  function parse(r: RenderedRequest | undefined): CloudEvent<unknown> {
    const parsed = HTTP.toEvent({ headers: { 'content-type': r?.contentType ?? '' }, body: r?.body ?? '' });
    const ce = (Array.isArray(parsed) ? parsed[0] : parsed) as CloudEvent<unknown>;
    expect(ce.validate()).toBe(true);
    return ce;
  }

  it('is structured-mode CloudEvents 1.0 that the SDK parses and validates, id = event id, reverse-DNS type', () => {
    const e = event();
    const [r] = render('cloudevents', e, target({ source: '/watchers/eu-1' }));
    expect(r?.contentType).toBe('application/cloudevents+json');
    const ce = parse(r);
    expect(ce.specversion).toBe('1.0');
    expect(ce.id).toBe(e.id);
    expect(ce.source).toBe('/watchers/eu-1');
    expect(ce.type).toBe('com.letta.run-watcher.run.failed');
    expect(ce.subject).toBe(RUN_ID);
    expect(ce.time).toBe(e.timestamp);
    expect(ce.datacontenttype).toBe('application/json');
    expect(ce.data).toEqual(e.data);
  });

  it('carries every event type, operator events included, and stays valid when cut to the size cap', () => {
    for (const type of ['run.completed', 'run.cancelled', 'run.not_found', 'run.expired', 'run.stalled'] as const) {
      expect(parse(render('cloudevents', event({ type }))[0]).type).toBe(`com.letta.run-watcher.${type}`);
    }
    const ops = parse(render('cloudevents', OPS)[0]);
    expect(ops.type).toBe('com.letta.run-watcher.endpoint.failing');
    expect(ops.subject).toBe('billing');
    const big = event({ run: { ...RUN, request_config: { blob: 'x'.repeat(50_000) } } });
    const [cut] = render('cloudevents', big, target(), 4096);
    expect(Buffer.byteLength(cut?.body ?? '')).toBeLessThanOrEqual(4096 + 512);
    expect((parse(cut).data as { truncated?: string[] }).truncated).toContain('run.request_config');
  });

  it('is a body the SDK refuses once an attribute is broken (the check can fail)', () => {
    const [r] = render('cloudevents', event());
    const { source: _source, ...broken } = json(r);
    expect(() => parse({ url: '', contentType: 'application/cloudevents+json', body: JSON.stringify(broken) })).toThrow(ValidationError);
  });
});

describe('slack (incoming webhooks, Block Kit)', () => {
  it('always sets text, and blocks with run, agent, status, stop reason and duration', () => {
    const [r] = render('slack', event());
    expect(r?.url).toBe('https://receiver.test/hook');
    expect(r?.contentType).toBe('application/json');
    const body = json(r) as { text: string; blocks: { type: string; text?: { type: string; text: string }; fields?: { type: string; text: string }[]; elements?: { type: string; text: string }[] }[] };
    expect(Object.keys(body).sort()).toEqual(['blocks', 'text']);
    expect(body.text).toBe(`Letta run ${RUN_ID} failed (llm_api_error) after 125.5 s`);
    // Slack: at most 50 blocks; a section's text at most 3000 characters, at most 10 fields
    // of at most 2000; a context at most 10 elements; text objects are plain_text or mrkdwn.
    expect(body.blocks.length).toBeLessThanOrEqual(50);
    for (const b of body.blocks) {
      expect(['section', 'context']).toContain(b.type);
      if (b.text) expect(b.text.text.length).toBeLessThanOrEqual(3000);
      for (const t of [b.text, ...(b.fields ?? []), ...(b.elements ?? [])].filter((x) => x !== undefined)) expect(['mrkdwn', 'plain_text']).toContain(t.type);
      expect((b.fields ?? []).length).toBeLessThanOrEqual(10);
      for (const f of b.fields ?? []) expect(f.text.length).toBeLessThanOrEqual(2000);
      expect((b.elements ?? []).length).toBeLessThanOrEqual(10);
    }
    const fields = Object.fromEntries((body.blocks.find((b) => b.fields)?.fields ?? []).map((f) => f.text.split('\n') as [string, string]));
    expect(fields).toEqual({
      '*Run*': `\`${RUN_ID}\``,
      '*Agent*': '`agent-7f3c`',
      '*Status*': 'failed',
      '*Stop reason*': 'llm_api_error',
      '*Duration*': '125.5 s',
      '*Event*': 'run.failed',
    });
  });

  it('escapes what the API said, so a hostile status cannot mention a channel or forge a link', () => {
    const [r] = render('slack', event({ run: { ...RUN, status: '<!channel> <https://evil.test|click>', stop_reason: 'a&b' } }));
    const body = r?.body ?? '';
    expect(body).not.toContain('<!channel>');
    expect(body).not.toContain('<https://evil.test');
    expect(body).toContain('&lt;!channel&gt;');
    expect(body).toContain('a&amp;b');
  });

  it('words operator events for people', () => {
    expect(json(render('slack', OPS)[0])['text']).toBe('Webhook endpoint billing is failing: 5 deliveries in a row got no 2xx (last: 503)');
  });
});

describe('pagerduty (Events API v2)', () => {
  const pd = target({ url: 'https://events.pagerduty.test/v2/enqueue', routingKey: ROUTING_KEY });

  it('triggers on a failure with routing_key, event_action, a dedup_key from the run, and payload summary/source/severity', () => {
    const e = event();
    const [r, extra] = render('pagerduty', e, pd);
    expect(extra).toBeUndefined();
    const body = json(r) as { routing_key: string; event_action: string; dedup_key: string; payload: Record<string, unknown> };
    expect(body.routing_key).toBe(ROUTING_KEY);
    expect(body.event_action).toBe('trigger');
    expect(body.dedup_key).toBe(`letta-run-watcher/${RUN_ID}/ended`);
    expect(body.dedup_key.length).toBeLessThanOrEqual(255);
    // Required: summary (at most 1024 characters), source, severity (critical, error, warning, info).
    expect(body.payload['summary']).toBe(`Letta run ${RUN_ID} failed (llm_api_error) after 125.5 s`);
    expect(String(body.payload['summary']).length).toBeLessThanOrEqual(1024);
    expect(body.payload['source']).toBe('letta agent agent-7f3c');
    expect(body.payload['severity']).toBe('error');
    expect(['critical', 'error', 'warning', 'info']).toContain(body.payload['severity']);
    // Optional, as documented: timestamp (ISO 8601), component, group, class, custom_details.
    expect(Date.parse(String(body.payload['timestamp']))).toBe(Date.parse(e.timestamp));
    expect(body.payload).toMatchObject({ component: 'letta-run', group: 'agent-7f3c', class: 'run.failed' });
    expect(body.payload['custom_details']).toMatchObject({ run_id: RUN_ID, status: 'failed', stop_reason: 'llm_api_error', event_id: e.id, metadata: { ticket: 'T-1' } });
    const allowed = ['routing_key', 'event_action', 'dedup_key', 'payload', 'images', 'links', 'client', 'client_url'];
    expect(Object.keys(body).filter((k) => !allowed.includes(k))).toEqual([]);
  });

  it('pages no one for a completed or cancelled run; a stall triggers its own incident, which the end resolves', () => {
    expect(render('pagerduty', event({ type: 'run.completed', run: { ...RUN, status: 'completed', stop_reason: 'end_turn' } }), pd)).toEqual([]);
    expect(render('pagerduty', event({ type: 'run.cancelled' }), pd)).toEqual([]);
    const stalledAt = Date.parse('2026-12-01T10:00:00Z');
    const stall = json(render('pagerduty', event({ type: 'run.stalled', run: { ...RUN, status: 'running', stop_reason: null }, stalledAt }), pd)[0]);
    expect(stall).toMatchObject({ event_action: 'trigger', dedup_key: `letta-run-watcher/${RUN_ID}/stalled`, payload: { severity: 'warning', class: 'run.stalled' } });
    const ended = render('pagerduty', event({ type: 'run.completed', run: { ...RUN, status: 'completed', stop_reason: 'end_turn' }, stalledAt }), pd);
    expect(ended.map(json)).toEqual([{ routing_key: ROUTING_KEY, event_action: 'resolve', dedup_key: `letta-run-watcher/${RUN_ID}/stalled` }]);
    const failedAfterStall = render('pagerduty', event({ stalledAt }), pd).map(json);
    expect(failedAfterStall.map((b) => [b['event_action'], b['dedup_key']])).toEqual([
      ['resolve', `letta-run-watcher/${RUN_ID}/stalled`],
      ['trigger', `letta-run-watcher/${RUN_ID}/ended`],
    ]);
  });

  it('resolves endpoint.failing by the same key when the endpoint recovers', () => {
    const failing = json(render('pagerduty', OPS, pd)[0]);
    const recovered = json(render('pagerduty', { ...OPS, type: 'endpoint.recovered' }, pd)[0]);
    expect(failing['event_action']).toBe('trigger');
    expect(recovered).toEqual({ routing_key: ROUTING_KEY, event_action: 'resolve', dedup_key: failing['dedup_key'] });
  });
});

describe('alertmanager (POST /api/v2/alerts)', () => {
  const am = target({ url: 'http://127.0.0.1:9093/', labels: { team: 'ml' }, resolveAfterMs: 600_000 });

  it('posts to the base URL /api/v2/alerts, labels identify the run, a one-off failure ends after resolveAfterMs', () => {
    const e = event();
    const [r] = render('alertmanager', e, am);
    expect(r?.url).toBe('http://127.0.0.1:9093/api/v2/alerts');
    const [alert] = JSON.parse(r?.body ?? '[]') as { labels: Record<string, string>; annotations: Record<string, string>; startsAt: string; endsAt: string }[];
    expect(alert?.labels).toEqual({ team: 'ml', alertname: 'LettaRunFailed', run_id: RUN_ID, agent_id: 'agent-7f3c', status: 'failed', stop_reason: 'llm_api_error' });
    expect(alert?.annotations['summary']).toBe(`Letta run ${RUN_ID} failed (llm_api_error) after 125.5 s`);
    expect(JSON.parse(alert?.annotations['description'] ?? '{}')).toMatchObject({ metadata: { ticket: 'T-1' } });
    expect(Date.parse(alert?.endsAt ?? '') - Date.parse(alert?.startsAt ?? '')).toBe(600_000);
  });

  it('raises nothing for a completed run; resolves a stall by the labels it was raised with', () => {
    const done = event({ type: 'run.completed', run: { ...RUN, status: 'completed', stop_reason: 'end_turn' } });
    expect(render('alertmanager', done, am)).toEqual([]);
    const stalledAt = Date.parse('2026-12-01T09:01:00Z');
    const [stall] = JSON.parse(render('alertmanager', event({ type: 'run.stalled', run: { ...RUN, status: 'running', stop_reason: null }, stalledAt }), am)[0]?.body ?? '[]') as { labels: object; endsAt: string }[];
    const [resolved] = JSON.parse(render('alertmanager', { ...done, data: { ...done.data, watch: { ...done.data.watch, stalled_at: new Date(stalledAt).toISOString() } } }, am)[0]?.body ?? '[]') as { labels: object; endsAt: string }[];
    expect(resolved?.labels).toEqual(stall?.labels);
    expect(resolved?.endsAt).toBe(NOW.toISOString());
    expect(Date.parse(stall?.endsAt ?? '')).toBeGreaterThan(NOW.getTime() + 5 * 60_000);
  });
});

describe('event and letta', () => {
  it('event is the envelope; letta is the callback body and says nothing of a stall or of endpoints', () => {
    const e = event();
    expect(json(render('event', e)[0])).toEqual(e);
    expect(json(render('letta', e)[0])).toEqual({ run_id: RUN_ID, status: 'failed', completed_at: RUN.completed_at, metadata: { ticket: 'T-1' } });
    expect(render('letta', event({ type: 'run.stalled' }))).toEqual([]);
    expect(render('letta', OPS)).toEqual([]);
  });
});
