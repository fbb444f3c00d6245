import type { WatchEvent } from '../../src/events/event.ts';
import { parseLettaTime } from '../../src/letta/run-state.ts';
import type { Receiver } from '../../test/kit/receiver.ts';
import type { Collected } from './collect.ts';
import type { Outcome, PhaseResult } from './faults.ts';
import type { ChaosOptions } from './options.ts';
import type { ChaosReport, Figures } from './report.ts';
import type { World } from './world.ts';

/** The figures of the report, from what the chaos phase did and what was collected at the end. */
export function computeFigures(f: { o: ChaosOptions; world: World; phase: PhaseResult; collected: Collected; exitCodes: (number | null)[]; elapsedMs: number }): Figures {
  const { o, world, phase, collected: c } = f;
  const { rx, targets } = world.receiver;
  const stats = c.simStats;
  return {
    seed: o.seed,
    elapsedMs: f.elapsedMs,
    runs: o.runs,
    replicas: o.replicas,
    apiRequests: stats.requests,
    simulatorByStatus: stats.byStatus,
    faults: faultCounts(stats.byStatus, world.tap.malformed),
    badApiPaths: world.tap.badPaths.length,
    kills: phase.kills,
    redisRestarts: phase.redisRestarts,
    receiverOutageMs: phase.receiverOutageMs,
    lagP99Ms: lagP99(c.events),
    catchUpMs: catchUp(rx, targets, c.events, phase.receiverUpAt),
    events: c.events.length,
    ...tallyEvents(c.events, phase.expected),
    webhook: tallyWebhooks(rx, targets, c.events, world.receiver.failedOnPurpose()),
    deadLetters: c.deadRaw.length,
    outboxLeft: c.outboxLeft,
    scheduleLeft: c.scheduleLeft,
    secretsScan: scanEverything(world, c),
    exitCodes: f.exitCodes,
    fatalLines: countFatalLines(c.outputs),
  };
}

/** Faults injected, by kind: 5xx and 429 and hung from the simulator's answers, malformed from the tap. */
function faultCounts(by: Record<string, number>, malformed: number): ChaosReport['faults'] {
  return {
    serverErrors: (by['500'] ?? 0) + (by['502'] ?? 0) + (by['503'] ?? 0),
    rateLimited: by['429'] ?? 0,
    hung: by['hung'] ?? 0,
    malformed,
  };
}

/** Each run's events against its expected outcome, and events of runs nobody made. */
function tallyEvents(events: readonly WatchEvent[], expected: ReadonlyMap<string, Outcome>) {
  const byRun = new Map<string, WatchEvent[]>();
  for (const e of events) byRun.set(e.data.run_id, [...(byRun.get(e.data.run_id) ?? []), e]);
  let missingEvents = 0;
  let duplicatesInStream = 0;
  let wrongEventTypes = 0;
  for (const [id, outcome] of expected) {
    const got = byRun.get(id) ?? [];
    if (got.length === 0) missingEvents++;
    if (got.length > 1) duplicatesInStream += got.length - 1;
    for (const e of got) if (e.type !== `run.${outcome}`) wrongEventTypes++;
  }
  const unexpectedEvents = [...byRun.keys()].filter((id) => !expected.has(id)).length;
  return { duplicatesInStream, missingEvents, unexpectedEvents, wrongEventTypes };
}

/** What the receiver got, per target and in all; every event should reach every target. */
function tallyWebhooks(rx: Receiver, targets: string[], events: readonly WatchEvent[], failedOnPurpose: number): ChaosReport['webhook'] {
  const eventIds = new Set(events.map((e) => e.id));
  const requests = rx.requests;
  const distinctIdsByTarget: Record<string, number> = {};
  let duplicateDeliveries = 0;
  let missingDeliveries = 0;
  for (const path of targets) {
    distinctIdsByTarget[path] = rx.distinctIds(path).size;
    const delivered = rx.deliveredIds(path);
    const ok2xx = rx.on(path).filter((r) => r.status !== undefined && r.status >= 200 && r.status < 300).length;
    duplicateDeliveries += ok2xx - delivered.size;
    for (const id of eventIds) if (!delivered.has(id)) missingDeliveries++;
  }
  return {
    targets,
    received: requests.length,
    answered2xx: requests.filter((r) => r.status !== undefined && r.status >= 200 && r.status < 300).length,
    failedOnPurpose,
    distinctIdsByTarget,
    distinctIds: rx.distinctIds().size,
    duplicateDeliveries,
    missingDeliveries,
    invalidSignatures: requests.filter((r) => !r.verified).length,
  };
}

/** Detection lag under chaos: p99 of the time from each run's end to its event. */
function lagP99(events: readonly WatchEvent[]): number {
  const lags = events
    .map((e) => Date.parse(e.data.watch.detected_at) - (parseLettaTime(e.data.run?.completed_at) ?? Number.NaN))
    .filter((x) => !Number.isNaN(x))
    .sort((a, b) => a - b);
  return lags[Math.min(lags.length - 1, Math.ceil(0.99 * lags.length) - 1)] ?? Number.NaN;
}

/**
 * How long after the receiver came back (or after its event, if later) each event's last
 * target got it: every webhook within 60 s of the receiver coming back.
 */
function catchUp(rx: Receiver, targets: string[], events: readonly WatchEvent[], receiverUpAt: number): number {
  const detectedAt = new Map(events.map((e) => [e.id, Date.parse(e.data.watch.detected_at)]));
  let catchUpMs = 0;
  for (const path of targets) {
    const first = new Map<string, number>();
    for (const r of rx.on(path)) {
      if (r.id === undefined || r.status === undefined || r.status < 200 || r.status >= 300) continue;
      first.set(r.id, Math.min(first.get(r.id) ?? Infinity, r.answeredAt ?? r.at));
    }
    for (const [id, at] of first) catchUpMs = Math.max(catchUpMs, at - Math.max(receiverUpAt, detectedAt.get(id) ?? 0));
  }
  return catchUpMs;
}

function countFatalLines(outputs: readonly string[]): number {
  return outputs.reduce((n, s) => n + (s.match(/"level":60|fatal:/g)?.length ?? 0), 0);
}

/** Looks for the API key and the webhook secret in everything the run left behind. */
function scanEverything(world: World, c: Collected): ChaosReport['secretsScan'] {
  const { apiKey, secret } = world;
  const texts: Record<string, string> = {
    'replica output': c.outputs.join('\n'),
    'P:events': c.streamRaw.join('\n'),
    'P:dead': c.deadRaw.join('\n'),
    status: c.statusText,
    'status --json': c.statusJson,
    'dead list --json': c.deadJson,
    'webhook requests': c.requests.map((r) => `${JSON.stringify(r.headers)}\n${r.body}`).join('\n'),
  };
  return scanSecrets({ LETTA_API_KEY: apiKey, WATCHER_WEBHOOK_SECRET: secret, 'webhook secret (base64 part)': secret.slice('whsec_'.length) }, texts);
}

/** Finds each secret in the texts; returns "<secret name> in <where>" per hit. */
export function scanSecrets(secrets: Readonly<Record<string, string>>, texts: Readonly<Record<string, string>>): { scannedBytes: number; hits: string[] } {
  const hits: string[] = [];
  let scannedBytes = 0;
  for (const [where, text] of Object.entries(texts)) {
    scannedBytes += Buffer.byteLength(text);
    for (const [name, secret] of Object.entries(secrets)) {
      if (secret.length >= 8 && text.includes(secret)) hits.push(`${name} in ${where}`);
    }
  }
  return { scannedBytes, hits };
}
