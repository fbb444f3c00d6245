import { randomUUID } from 'node:crypto';
import { DaemonError } from '../../src/errors.ts';

/**
 * The pure run model behind the simulator: what a Letta run looks like at a given instant.
 * Everything random about a run is drawn once at creation, so the same run answers the same
 * way every time it is asked about the same instant (pollers see a consistent history).
 */

/** How a simulated run ends; `never` stays `running` forever (for timeout and shutdown tests). */
export type SimOutcome = 'completed' | 'failed' | 'cancelled' | 'never';

export interface SimRunSpec {
  id?: string;
  durationMs?: number;
  outcome?: SimOutcome;
  agentId?: string;
  metadata?: Record<string, unknown> | null;
  /** Letta POSTs its callback here once when the run ends (5 s timeout, no retry). */
  callbackUrl?: string;
  /** How the run stops (one that suits the outcome); drawn when not given. */
  stopReason?: StopReason;
}

/** What Letta records on the run after trying its callback. */
export interface CallbackRecord {
  sentAt: number;
  statusCode: number | null;
  error: string | null;
}

/** Letta's `RunStatus` values. */
export type RunStatus = 'created' | 'running' | 'completed' | 'failed' | 'cancelled';

/** The subset of Letta's `StopReasonType` values a simulated run can end with. */
export type StopReason = 'end_turn' | 'requires_approval' | 'max_steps' | 'error' | 'llm_api_error' | 'cancelled';

/** Weights for picking an outcome; they need not sum to 1. */
export interface OutcomeWeights {
  completed: number;
  failed: number;
  cancelled: number;
}

export interface RunDefaults {
  durationMs: readonly [number, number];
  outcomes: OutcomeWeights;
}

/** The JSON a `GET /v1/runs/{run_id}` answers with, shaped like schema `Run` in Letta's OpenAPI. */
export interface RunBody {
  id: string;
  agent_id: string;
  status: RunStatus;
  background: boolean;
  conversation_id: null;
  base_template_id: null;
  metadata: Record<string, unknown> | null;
  request_config: null;
  created_at: string;
  completed_at: string | null;
  stop_reason: StopReason | null;
  callback_url: string | null;
  callback_sent_at: string | null;
  callback_status_code: number | null;
  callback_error: string | null;
  ttft_ns: number | null;
  total_duration_ns: number | null;
}

export interface SimRun {
  readonly id: string;
  readonly agentId: string;
  readonly outcome: SimOutcome;
  readonly createdAt: number;
  /** Epoch ms at which the run turns terminal; null for `never`. */
  readonly finishesAt: number | null;
  /** Epoch ms at which `created` turns into `running`. */
  readonly runningAt: number;
  readonly stopReason: StopReason | null;
  readonly metadata: Record<string, unknown> | null;
  readonly callbackUrl: string | null;
  /** Sub-millisecond part of `completed_at` (0..999 µs): Letta's timestamps carry microseconds. */
  readonly completedMicros: number;
  readonly ttftNs: number;
  /**
   * Uniform draw in [0,1); the run shows the Letta Cloud quirk when it is below the current
   * `quirkRate`. Drawn once so the decision is stable per run for a given rate.
   */
  readonly quirkRoll: number;
}

/** Phase of a run at an instant, coarser than status: the body only changes between phases. */
export type RunPhase = 'created' | 'running' | 'terminal';

export const DEFAULT_RUN_DEFAULTS: RunDefaults = {
  durationMs: [2000, 8000],
  outcomes: { completed: 0.7, failed: 0.2, cancelled: 0.1 },
};

/** Letta's own run-ID format: `run-` and a lowercase version-4 UUID; it answers 400 for anything else. */
export const LETTA_RUN_ID = /^run-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const SIM_OUTCOMES: readonly SimOutcome[] = ['completed', 'failed', 'cancelled', 'never'];
/** Letta keeps a run `created` only briefly before the agent loop picks it up. */
const CREATED_PHASE_MAX_MS = 200;

/** Letta's own run-id check: what the real server accepts before looking the id up. */
export function isValidRunId(id: string): boolean {
  return LETTA_RUN_ID.test(id);
}

export function isSimOutcome(value: unknown): value is SimOutcome {
  return typeof value === 'string' && (SIM_OUTCOMES as readonly string[]).includes(value);
}

export function validateRunSpec(spec: SimRunSpec, label = 'run'): void {
  if (spec.id !== undefined && (typeof spec.id !== 'string' || !isValidRunId(spec.id))) {
    throw new DaemonError(
      'ERR_USAGE',
      `${label}.id must be run-<lowercase uuid4>, as Letta makes them (got ${JSON.stringify(spec.id)})`,
    );
  }
  if (
    spec.durationMs !== undefined &&
    (typeof spec.durationMs !== 'number' || !Number.isFinite(spec.durationMs) || spec.durationMs < 0)
  ) {
    throw new DaemonError('ERR_USAGE', `${label}.durationMs must be a non-negative number (got ${String(spec.durationMs)})`);
  }
  if (spec.outcome !== undefined && !isSimOutcome(spec.outcome)) {
    throw new DaemonError(
      'ERR_USAGE',
      `${label}.outcome must be one of ${SIM_OUTCOMES.join(', ')} (got ${JSON.stringify(spec.outcome)})`,
    );
  }
  if (spec.stopReason !== undefined) {
    const fits = STOP_REASONS_BY_OUTCOME[spec.outcome ?? 'completed'];
    if (!fits.includes(spec.stopReason)) {
      throw new DaemonError('ERR_USAGE', `${label}.stopReason must be one of ${fits.join(', ') || '(none)'} for outcome ${spec.outcome ?? 'completed'} (got ${JSON.stringify(spec.stopReason)})`);
    }
  }
  if (spec.agentId !== undefined && (typeof spec.agentId !== 'string' || spec.agentId.length === 0)) {
    throw new DaemonError('ERR_USAGE', `${label}.agentId must be a non-empty string (got ${JSON.stringify(spec.agentId)})`);
  }
  if (
    spec.metadata !== undefined &&
    spec.metadata !== null &&
    (typeof spec.metadata !== 'object' || Array.isArray(spec.metadata))
  ) {
    throw new DaemonError('ERR_USAGE', `${label}.metadata must be an object or null`);
  }
  if (spec.callbackUrl !== undefined && (typeof spec.callbackUrl !== 'string' || !/^https?:\/\//.test(spec.callbackUrl))) {
    throw new DaemonError('ERR_USAGE', `${label}.callbackUrl must be an http(s) URL (got ${JSON.stringify(spec.callbackUrl)})`);
  }
}

function pickOutcome(weights: OutcomeWeights, roll: number): Exclude<SimOutcome, 'never'> {
  const total = weights.completed + weights.failed + weights.cancelled;
  const x = roll * total;
  if (x < weights.completed) return 'completed';
  if (x < weights.completed + weights.failed) return 'failed';
  return weights.cancelled > 0 ? 'cancelled' : weights.failed > 0 ? 'failed' : 'completed';
}

/** The stop reasons a simulated run of each outcome can end with. */
const STOP_REASONS_BY_OUTCOME: Record<SimOutcome, readonly StopReason[]> = {
  completed: ['end_turn', 'requires_approval', 'max_steps'],
  failed: ['error', 'llm_api_error'],
  cancelled: ['cancelled'],
  never: [],
};

function pickStopReason(outcome: SimOutcome, roll: number): StopReason | null {
  switch (outcome) {
    // Most completed runs end their turn; the rest are the other non-error ways a run stops.
    case 'completed':
      return roll < 0.8 ? 'end_turn' : roll < 0.9 ? 'requires_approval' : 'max_steps';
    case 'failed':
      return roll < 0.5 ? 'error' : 'llm_api_error';
    case 'cancelled':
      return 'cancelled';
    case 'never':
      return null;
  }
}

/**
 * Builds a run from a spec. Draws from `random` in a fixed order whatever the spec says, so a
 * seeded `random` yields the same runs on every start.
 */
export function createSimRun(
  spec: SimRunSpec,
  ctx: { now: number; random: () => number; defaults: RunDefaults },
): SimRun {
  validateRunSpec(spec);
  const { random, defaults } = ctx;
  const durationRoll = random();
  const outcomeRoll = random();
  const stopRoll = random();
  const ttftRoll = random();
  const microsRoll = random();
  const quirkRoll = random();

  const [minMs, maxMs] = defaults.durationMs;
  const durationMs = Math.round(spec.durationMs ?? minMs + durationRoll * (maxMs - minMs));
  const outcome = spec.outcome ?? pickOutcome(defaults.outcomes, outcomeRoll);
  const createdAt = ctx.now;
  const finishesAt = outcome === 'never' ? null : createdAt + durationMs;
  const createdPhaseMs =
    finishesAt === null ? CREATED_PHASE_MAX_MS : Math.min(CREATED_PHASE_MAX_MS, durationMs * 0.1);
  // Time to first token: a realistic 150-1350 ms, but never longer than the run itself.
  const ttftMs = Math.min(150 + ttftRoll * 1200, finishesAt === null ? Infinity : durationMs);

  return {
    id: spec.id ?? `run-${randomUUID()}`,
    agentId: spec.agentId ?? `agent-${randomUUID()}`,
    outcome,
    createdAt,
    finishesAt,
    runningAt: createdAt + createdPhaseMs,
    stopReason: spec.stopReason ?? pickStopReason(outcome, stopRoll),
    metadata: spec.metadata ?? null,
    callbackUrl: spec.callbackUrl ?? null,
    completedMicros: Math.floor(microsRoll * 1000),
    ttftNs: Math.round(ttftMs * 1_000_000),
    quirkRoll,
  };
}

export function runPhaseAt(run: SimRun, now: number): RunPhase {
  if (run.finishesAt !== null && now >= run.finishesAt) return 'terminal';
  return now < run.runningAt ? 'created' : 'running';
}

export function runStatusAt(run: SimRun, now: number): RunStatus {
  const phase = runPhaseAt(run, now);
  if (phase !== 'terminal') return phase;
  // `never` runs have no finishesAt, so they cannot reach the terminal phase.
  return run.outcome === 'never' ? 'running' : run.outcome;
}

/**
 * Letta stores `completed_at` as a naive UTC datetime and serialises it without a zone and
 * with microseconds (`2025-10-17T21:53:05.123456`); clients must not parse it as local time.
 */
export function formatNaiveUtcMicros(epochMs: number, micros: number): string {
  const iso = new Date(Math.floor(epochMs)).toISOString(); // 2025-10-17T21:53:05.123Z
  return iso.slice(0, 23) + String(Math.max(0, Math.min(999, Math.floor(micros)))).padStart(3, '0');
}

/**
 * The Run body at an instant. With `quirk`, a terminal run reports its terminal status while
 * `stop_reason` and `completed_at` are still null, as Letta Cloud sometimes does.
 */
export function runBodyAt(run: SimRun, now: number, quirk = false, callback?: CallbackRecord): RunBody {
  const phase = runPhaseAt(run, now);
  const terminal = phase === 'terminal' && run.finishesAt !== null;
  const durationNs =
    run.finishesAt === null ? null : (run.finishesAt - run.createdAt) * 1_000_000 + run.completedMicros * 1000;
  return {
    id: run.id,
    agent_id: run.agentId,
    status: runStatusAt(run, now),
    background: true,
    conversation_id: null,
    base_template_id: null,
    metadata: run.metadata,
    request_config: null,
    created_at: new Date(Math.floor(run.createdAt)).toISOString(),
    completed_at:
      terminal && !quirk && run.finishesAt !== null ? formatNaiveUtcMicros(run.finishesAt, run.completedMicros) : null,
    stop_reason: terminal && !quirk ? run.stopReason : null,
    callback_url: run.callbackUrl,
    callback_sent_at: callback ? formatNaiveUtcMicros(callback.sentAt, 0) : null,
    callback_status_code: callback?.statusCode ?? null,
    callback_error: callback?.error ?? null,
    ttft_ns: phase === 'created' ? null : run.ttftNs,
    total_duration_ns: terminal && durationNs !== null ? Math.round(durationNs) : null,
  };
}
