import { HTTP, type CloudEvent } from 'cloudevents';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../src/config.ts';
import { Daemon } from '../src/daemon.ts';
import type { AnyEvent, OpsEvent, WatchEvent } from '../src/events/event.ts';
import { makeLogger } from '../src/log.ts';
import type { StopReason } from '../tools/simulator/runs.ts';
import type { CreatedRun, SimRunSpec, Simulator } from '../tools/simulator/server.ts';
import { startAlertmanager, type Alertmanager } from './kit/alertmanager.ts';
import { captureLogger, enqueue, keys, outboxDrained as drained, readDead, readEvents, runCli, startDaemon, testEnv, useSuite, waitFor, type EnvOverrides } from './kit/harness.ts';
import { newSecret, type Receiver, type ReceivedRequest, type Responder } from './kit/receiver.ts';
import { createRuns, OUTCOMES } from './kit/runs.ts';

/**
 * The alerting stack's own formats end to end: the daemon in-process, the simulator as Letta,
 * real Redis, a real Alertmanager (Debian's package, on a free loopback port) and verifying
 * receivers on 127.0.0.1 standing in for Slack, PagerDuty and CloudEvents consumers. Runs
 * really stall (the simulator keeps them running past WATCHER_STALLED_AFTER_MS) and endpoints
 * really fail (the receiver answers 503 or 410); every test counts what arrived.
 */

const FAST_SCHEDULE = [0, 50, 100];
const CONFIG_FILE = 'alerting-test.json';
// The seed (LRW_SEED, else a fresh one) is printed once; every draw below comes from it.
const { redis, cleanup, rng, simulator, receiver: startRx } = useSuite();

let am: Alertmanager;
beforeAll(async () => {
  am = await startAlertmanager();
});
afterAll(async () => {
  await am?.stop();
});

async function receiver(secrets: readonly string[], respond?: Responder): Promise<Receiver> {
  return await startRx(respond ? { secrets, respond } : { secrets });
}

interface Started {
  daemon: Daemon;
  config: Config;
  prefix: string;
}

async function start(sim: Simulator, secret: string, webhooks: Record<string, unknown>, env: EnvOverrides = {}, log = makeLogger('silent')): Promise<Started> {
  const file = JSON.stringify({ webhooks: { scheduleMs: FAST_SCHEDULE, ...webhooks } });
  const config = loadConfig({
    env: testEnv({ LETTA_BASE_URL: sim.url, WATCHER_WEBHOOK_SECRET: secret, WATCHER_CONFIG: CONFIG_FILE, WATCHER_SHUTDOWN_GRACE_MS: '500', ...env }),
    readFile: () => file,
  });
  const daemon = await startDaemon(cleanup, config, { log });
  return { daemon, config, prefix: config.redis.keyPrefix };
}

/** `n` runs with durations and outcomes (and, by the simulator, stop reasons) drawn from the seed. */
function seededRuns(sim: Simulator, n: number, extra: (i: number) => SimRunSpec = () => ({})): CreatedRun[] {
  // Every outcome at least once, the rest drawn.
  const outcome = (i: number) => OUTCOMES[i < 3 ? i : rng.int(0, OUTCOMES.length - 1)] ?? 'completed';
  return createRuns(sim, n, { durationMs: [0, 299], outcome, spec: extra, random: rng.random }).list;
}

async function terminalEvents(prefix: string, n: number): Promise<WatchEvent[]> {
  let last: WatchEvent[] = [];
  return await waitFor(
    async () => {
      last = (await readEvents(redis, prefix)).map((e) => e.event).filter((e) => e.type !== 'run.stalled');
      return last.length >= n ? last : undefined;
    },
    { timeoutMs: 20_000, describe: () => `${last.length} of ${n} terminal events` },
  );
}

const outboxDrained = (prefix: string) => drained(redis, prefix, 20_000);

const bodies = (rx: Receiver, path: string) => rx.on(path).map((r) => JSON.parse(r.body) as Record<string, unknown>);

describe('Alertmanager (real, loopback)', () => {
  it('after a batch of runs: exactly one active alert per failed run with the right labels, none for completed or cancelled runs', async () => {
    const sim = await simulator();
    const { prefix } = await start(sim, newSecret(), { targets: [{ url: am.url, name: 'am', format: 'alertmanager', labels: { team: 'ml', env: 'test' } }] }, { WATCHER_STALLED_AFTER_MS: '0' });
    const runs = seededRuns(sim, 24);
    await enqueue(redis, prefix, runs.map((r) => r.id));
    const events = await terminalEvents(prefix, runs.length);
    await outboxDrained(prefix);

    const mine = new Set(runs.map((r) => r.id));
    const alerts = (await am.alerts()).filter((a) => mine.has(a.labels['run_id'] ?? ''));
    const failed = events.filter((e) => e.type === 'run.failed');
    expect(failed.length).toBeGreaterThan(0);
    expect(alerts.map((a) => a.labels['run_id']).sort()).toEqual(failed.map((e) => e.data.run_id).sort());
    for (const e of failed) {
      const alert = alerts.find((a) => a.labels['run_id'] === e.data.run_id);
      expect(alert?.labels).toEqual({
        alertname: 'LettaRunFailed',
        run_id: e.data.run_id,
        agent_id: e.data.agent_id,
        status: 'failed',
        stop_reason: e.data.stop_reason,
        team: 'ml',
        env: 'test',
      });
      expect(alert?.status.state).toBe('active');
      expect(alert?.annotations['summary']).toContain(`Letta run ${e.data.run_id} failed`);
      expect(alert?.annotations['event_id']).toBe(e.id);
      // A one-off alert: bounded, resolving by itself an hour (resolveAfterMs) after detection.
      expect(Date.parse(alert?.endsAt ?? '') - Date.parse(e.timestamp)).toBe(3_600_000);
    }
  });

  it('a run that stalls raises an alert, re-sent while it stays stalled, and resolved when it finishes', async () => {
    const sim = await simulator();
    const secret = newSecret();
    const { prefix } = await start(sim, secret, { targets: [{ url: am.url, name: 'am', format: 'alertmanager', repeatMs: 1000 }] }, { WATCHER_STALLED_AFTER_MS: '700' });
    const resolvedBefore = await am.resolvedReceived();
    const slow = sim.createRun({ durationMs: 4500, outcome: 'completed' });
    const slowFail = sim.createRun({ durationMs: 4500, outcome: 'failed' });
    await enqueue(redis, prefix, [slow.id, slowFail.id]);

    const stalledAlert = (runId: string) => am.alerts(true).then((all) => all.find((a) => a.labels['alertname'] === 'LettaRunStalled' && a.labels['run_id'] === runId));
    const raised = await waitFor(async () => {
      const a = await stalledAlert(slow.id);
      return a?.status.state === 'active' ? a : undefined;
    }, { timeoutMs: 10_000, describe: () => 'no active LettaRunStalled alert' });
    expect(raised.labels).toEqual({ alertname: 'LettaRunStalled', run_id: slow.id, agent_id: slow.agentId });
    const firstEnds = Date.parse(raised.endsAt);
    // Still stalled: the alert is re-sent (Alertmanager would resolve one that is not).
    const resent = await waitFor(async () => {
      const a = await stalledAlert(slow.id);
      return a && Date.parse(a.endsAt) > firstEnds ? a : undefined;
    }, { timeoutMs: 5000, describe: () => 'the stalled alert was not re-sent' });
    expect(resent.status.state).toBe('active');

    const ended = await terminalEvents(prefix, 2);
    expect(ended.every((e) => e.data.watch.stalled_at !== null)).toBe(true);
    // Alertmanager lists only unresolved alerts: resolved, the alert leaves the list.
    await waitFor(async () => (await stalledAlert(slow.id)) === undefined, {
      timeoutMs: 10_000,
      describe: async () => `stalled alert not resolved: ${JSON.stringify(await stalledAlert(slow.id))}`,
    });
    // ...because both stalls were resolved (endsAt = now, same labels), not left to run out.
    await waitFor(async () => (await am.resolvedReceived()) - resolvedBefore >= 2, { timeoutMs: 5000, describe: async () => `${(await am.resolvedReceived()) - resolvedBefore} resolved alerts received` });
    expect((await am.alerts()).some((a) => a.labels['run_id'] === slow.id)).toBe(false);
    // The stalled run that then failed: its stall resolved, its failure alert active.
    const active = (await am.alerts()).filter((a) => a.labels['run_id'] === slowFail.id).map((a) => a.labels['alertname']);
    expect(active).toEqual(['LettaRunFailed']);
    await outboxDrained(prefix);
    // Once a run has ended its stall alert is never sent again: it stays resolved.
    await new Promise((r) => setTimeout(r, 2500));
    expect(await stalledAlert(slow.id)).toBeUndefined();
    expect(await stalledAlert(slowFail.id)).toBeUndefined();
    const all = await readEvents(redis, prefix);
    expect(all.filter((e) => e.event.type === 'run.stalled').map((e) => e.event.data.run_id).sort()).toEqual([slow.id, slowFail.id].sort());
  });
});

describe('routing', () => {
  it('types and stopReasons filter at commit: failures only, exactly one per failed run; requires_approval to its own channel; WATCHER_WEBHOOK_URLS get every run event', async () => {
    const sim = await simulator();
    const secret = newSecret();
    const rx = await receiver([secret]);
    const { prefix } = await start(
      sim,
      secret,
      {
        targets: [
          { url: `${rx.url}/failures`, name: 'failures', types: ['run.failed'] },
          { url: `${rx.url}/approvals`, name: 'approvals', format: 'slack', types: ['run.completed'], stopReasons: ['requires_approval'] },
          { url: `${rx.url}/stream`, name: 'stream', format: 'cloudevents' },
        ],
      },
      { WATCHER_WEBHOOK_URLS: `${rx.url}/all`, WATCHER_STALLED_AFTER_MS: '0' },
    );
    const reasons: StopReason[] = ['end_turn', 'requires_approval', 'max_steps'];
    const runs = seededRuns(sim, 30, (i) => (i % 4 === 1 ? { outcome: 'completed', stopReason: reasons[i % 3] as StopReason } : {}));
    await enqueue(redis, prefix, runs.map((r) => r.id));
    const events = await terminalEvents(prefix, runs.length);
    await outboxDrained(prefix);

    const failedIds = events.filter((e) => e.type === 'run.failed').map((e) => e.data.run_id).sort();
    const failures = bodies(rx, '/failures') as unknown as WatchEvent[];
    expect(failures.map((e) => e.type).every((t) => t === 'run.failed')).toBe(true);
    expect(failures.map((e) => e.data.run_id).sort()).toEqual(failedIds);
    expect(rx.distinctIds('/failures').size).toBe(failedIds.length);

    const approvals = events.filter((e) => e.type === 'run.completed' && e.data.stop_reason === 'requires_approval').map((e) => e.data.run_id);
    expect(approvals.length).toBeGreaterThan(0);
    const slackRuns = bodies(rx, '/approvals').map((b) => /^Letta run (\S+) completed \(requires_approval\) after [\d.]+ s$/.exec(String(b['text']))?.[1]);
    expect(slackRuns.sort()).toEqual(approvals.sort());

    expect(rx.on('/all').map((r) => r.id).sort()).toEqual(events.map((e) => e.id).sort());
    expect(rx.on('/stream')).toHaveLength(runs.length);
    // A filtered-out target costs nothing: no delivery was ever recorded for it.
    expect(rx.requests.every((r) => r.verified)).toBe(true);
  });
});

describe('CloudEvents, Slack and PagerDuty over HTTP', () => {
  it('CloudEvents bodies as received parse and validate with the SDK, id = webhook-id, signed', async () => {
    const sim = await simulator();
    const secret = newSecret();
    const rx = await receiver([secret]);
    const { prefix } = await start(sim, secret, { targets: [{ url: `${rx.url}/ce`, name: 'ce', format: 'cloudevents', source: '/letta/eu-1' }] }, { WATCHER_STALLED_AFTER_MS: '0' });
    const runs = seededRuns(sim, 6);
    await enqueue(redis, prefix, runs.map((r) => r.id));
    const events = await terminalEvents(prefix, runs.length);
    await outboxDrained(prefix);
    const received = rx.on('/ce');
    expect(received).toHaveLength(runs.length);
    for (const r of received) {
      expect(r.verified).toBe(true);
      expect(r.headers['content-type']).toBe('application/cloudevents+json');
      const parsed = HTTP.toEvent({ headers: r.headers, body: r.body });
      const ce = (Array.isArray(parsed) ? parsed[0] : parsed) as CloudEvent<WatchEvent['data']>;
      expect(ce.validate()).toBe(true);
      const e = events.find((x) => x.id === ce.id);
      expect(ce.id).toBe(r.id);
      expect(ce.type).toBe(`com.letta.run-watcher.${e?.type}`);
      expect(ce.source).toBe('/letta/eu-1');
      expect(ce.subject).toBe(e?.data.run_id);
      expect(ce.data).toEqual(e?.data);
    }
  });

  it('PagerDuty: a trigger per failure and a stall resolved by its dedup_key; the routing key is in request bodies only, never in logs, events, dead letters or metrics', async () => {
    const sim = await simulator();
    const secret = newSecret();
    const rx = await receiver([secret], (req) => (req.path === '/v2/enqueue' ? { status: 202, body: '{"status":"success"}' } : { status: 404 }));
    const routingKey = `R${'0123456789abcdef'.repeat(2).slice(1)}`;
    const { log, lines } = captureLogger('debug');
    const { prefix, daemon } = await start(
      sim,
      secret,
      { targets: [{ url: `${rx.url}/v2/enqueue`, name: 'pager', format: 'pagerduty', routingKeyEnv: 'LRW_TEST_PD_KEY' }] },
      { LRW_TEST_PD_KEY: routingKey, WATCHER_STALLED_AFTER_MS: '700' },
      log,
    );
    const stalls = sim.createRun({ durationMs: 2500, outcome: 'completed' });
    const runs = [...seededRuns(sim, 9), stalls];
    await enqueue(redis, prefix, runs.map((r) => r.id));
    const events = await terminalEvents(prefix, runs.length);
    await outboxDrained(prefix);

    const sent = bodies(rx, '/v2/enqueue') as { routing_key: string; event_action: string; dedup_key: string; payload?: Record<string, unknown> }[];
    expect(sent.every((b) => b.routing_key === routingKey)).toBe(true);
    const triggers = sent.filter((b) => b.event_action === 'trigger' && b.dedup_key.endsWith('/ended')).map((b) => b.dedup_key).sort();
    expect(triggers).toEqual(events.filter((e) => e.type === 'run.failed').map((e) => `letta-run-watcher/${e.data.run_id}/ended`).sort());
    const stallKey = `letta-run-watcher/${stalls.id}/stalled`;
    expect(sent.filter((b) => b.dedup_key === stallKey).map((b) => b.event_action)).toEqual(['trigger', 'resolve']);

    const everywhere = [
      JSON.stringify(lines),
      JSON.stringify(await readEvents(redis, prefix)),
      JSON.stringify(await readDead(redis, prefix)),
      await daemon.metrics.registry.metrics(),
      (await runCli(['status', '--json'], testEnv({ WATCHER_KEY_PREFIX: prefix }))).out,
    ].join('\n');
    expect(lines.length).toBeGreaterThan(10);
    expect(everywhere).not.toContain(routingKey);
  });
});

describe('order of a stall and its resolution', () => {
  it('a stall trigger still being retried when the run ends is never sent after the resolve (an incident would stay open)', async () => {
    const sim = await simulator();
    const secret = newSecret();
    const run = sim.createRun({ durationMs: 2500, outcome: 'completed' });
    const ends = Date.now() + 2500;
    // The endpoint fails the stall's trigger until well after the run has ended.
    const rx = await receiver([secret], (req) => {
      const body = JSON.parse(req.body) as { event_action: string };
      return body.event_action === 'trigger' && Date.now() < ends + 1500 ? { status: 503 } : { status: 202 };
    });
    const { prefix } = await start(
      sim,
      secret,
      { scheduleMs: [0, 1200, 1200, 1200, 1200], targets: [{ url: `${rx.url}/v2/enqueue`, name: 'pager', format: 'pagerduty', routingKeyEnv: 'LRW_TEST_PD_KEY' }] },
      { LRW_TEST_PD_KEY: 'k'.repeat(32), WATCHER_STALLED_AFTER_MS: '700' },
    );
    await enqueue(redis, prefix, [run.id]);
    await terminalEvents(prefix, 1);
    await outboxDrained(prefix);
    const sent = rx.requests.map((r) => [(JSON.parse(r.body) as { event_action: string }).event_action, r.status] as const);
    const resolvedAt = sent.findIndex(([action]) => action === 'resolve');
    expect(resolvedAt).toBeGreaterThan(0);
    expect(sent[resolvedAt]?.[1]).toBe(202);
    // Triggers came before the resolve only, and the resolve is the last word.
    expect(sent.slice(resolvedAt + 1)).toEqual([]);
    expect(sent.slice(0, resolvedAt).every(([action]) => action === 'trigger')).toBe(true);
  });
});

describe('delivery-health events', () => {
  it('endpoint.failing once after N failures in a row, delivery.dead rate-limited, endpoint.recovered at the next 2xx; recorded in the ops stream; the gauge follows', async () => {
    const sim = await simulator();
    const secret = newSecret();
    let healthy = false;
    const rx = await receiver([secret], (req) => (req.path === '/billing' && !healthy ? { status: 503 } : { status: 200 }));
    const { prefix, daemon } = await start(
      sim,
      secret,
      {
        failingAfter: 3,
        opsEventGapMs: 60_000,
        targets: [
          { url: `${rx.url}/billing`, name: 'billing' },
          { url: `${rx.url}/ops`, name: 'ops', types: ['endpoint.*', 'delivery.dead'] },
          { url: `${rx.url}/ops-slack`, name: 'ops-slack', format: 'slack', types: ['endpoint.failing'] },
        ],
      },
      { WATCHER_STALLED_AFTER_MS: '0' },
    );
    const failingRuns = seededRuns(sim, 6);
    await enqueue(redis, prefix, failingRuns.map((r) => r.id));
    await terminalEvents(prefix, failingRuns.length);
    await outboxDrained(prefix);
    // 6 deliveries x 3 attempts to billing, all 503: failing once, and one delivery.dead for
    // the 6 dead letters (the rest held back by the gap, counted in the next one).
    const ops = () => bodies(rx, '/ops') as unknown as OpsEvent[];
    await waitFor(() => ops().length >= 2, { timeoutMs: 10_000, describe: () => JSON.stringify(ops().map((e) => e.type)) });
    expect(ops().map((e) => e.type).sort()).toEqual(['delivery.dead', 'endpoint.failing']);
    const failing = ops().find((e) => e.type === 'endpoint.failing');
    expect(failing?.data).toMatchObject({ target: 'billing', last_status: 503 });
    expect(failing?.data.consecutive_failures).toBeGreaterThanOrEqual(3);
    expect((await readDead(redis, prefix)).length).toBe(failingRuns.length);
    expect(bodies(rx, '/ops-slack').map((b) => b['text'])).toEqual([`Webhook endpoint billing is failing: ${failing?.data.consecutive_failures} deliveries in a row got no 2xx (last: 503)`]);
    expect((await daemon.metrics.registry.getSingleMetricAsString('letta_watcher_endpoints_failing')).trim().split('\n').at(-1)).toBe('letta_watcher_endpoints_failing 1');

    healthy = true;
    const more = seededRuns(sim, 3);
    await enqueue(redis, prefix, more.map((r) => r.id));
    await terminalEvents(prefix, failingRuns.length + more.length);
    await waitFor(() => ops().some((e) => e.type === 'endpoint.recovered'), { timeoutMs: 10_000, describe: () => JSON.stringify(ops().map((e) => e.type)) });
    await outboxDrained(prefix);
    expect(ops().map((e) => e.type).sort()).toEqual(['delivery.dead', 'endpoint.failing', 'endpoint.recovered']);
    expect(ops().every((e) => e.data.target === 'billing')).toBe(true);
    expect(rx.on('/ops').every((r) => r.verified)).toBe(true);
    // The ops stream holds what was raised, and the events stream none of it.
    const stream = (await redis.xrange(keys(prefix).ops, '-', '+')).map(([, f]) => JSON.parse(f[1] as string) as AnyEvent);
    expect(stream.map((e) => e.id).sort()).toEqual(ops().map((e) => e.id).sort());
    expect((await readEvents(redis, prefix)).every((e) => e.event.type.startsWith('run.'))).toBe(true);
    expect((await daemon.metrics.registry.getSingleMetricAsString('letta_watcher_endpoints_failing')).trim().split('\n').at(-1)).toBe('letta_watcher_endpoints_failing 0');
  });

  it('a 410 raises endpoint.disabled for that endpoint; an endpoint hears nothing about itself', async () => {
    const sim = await simulator();
    const secret = newSecret();
    const rx = await receiver([secret], (req: ReceivedRequest) => (req.path === '/gone' ? { status: 410 } : { status: 200 }));
    const { prefix } = await start(sim, secret, {
      targets: [
        { url: `${rx.url}/gone`, name: 'gone', types: ['run.*', 'endpoint.*'] },
        { url: `${rx.url}/ops`, name: 'ops', types: ['endpoint.disabled'] },
      ],
    });
    const runs = seededRuns(sim, 3);
    await enqueue(redis, prefix, runs.map((r) => r.id));
    await terminalEvents(prefix, runs.length);
    await outboxDrained(prefix);
    await waitFor(() => rx.on('/ops').length >= 1, { timeoutMs: 10_000 });
    await outboxDrained(prefix);
    expect(bodies(rx, '/ops').map((b) => [b['type'], (b['data'] as { target: string }).target])).toEqual([['endpoint.disabled', 'gone']]);
    expect(bodies(rx, '/gone').every((b) => String(b['type']).startsWith('run.'))).toBe(true);
  });
});
