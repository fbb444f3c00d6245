import { describe, expect, it } from 'vitest';
import { RUN_EVENT_TYPES as EVENT_TYPES } from '../../src/events/event.ts';
import { buildEvent, eventId, lettaCallbackBody } from '../../src/events/event.ts';
import type { EventInput } from '../../src/events/event.ts';
import type { Run } from '../../src/letta/client.ts';

const RUN_ID = 'run-123e4567-e89b-12d3-a456-426614174000';
const ENQUEUED = Date.parse('2026-11-28T19:40:00.000Z');
const DETECTED = Date.parse('2026-11-28T19:42:59.123Z');
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

const RUN: Run = {
  id: RUN_ID,
  agent_id: 'agent-1',
  status: 'completed',
  stop_reason: 'end_turn',
  completed_at: '2026-11-28T19:42:58.000001',
  callback_error: 'timeout',
};

function input(over: Partial<EventInput> = {}): EventInput {
  return { type: 'run.completed', runId: RUN_ID, run: RUN, metadata: { team: 'a' }, enqueuedAt: ENQUEUED, detectedAt: DETECTED, polls: 7, ...over };
}

describe('eventId', () => {
  // Pinned values: a receiver dedupes by id across replicas, restarts and upgrades, so the id
  // of a run and type is fixed (this also fails should it ever depend on time or chance).
  it('does not change between versions (receivers dedupe across upgrades)', () => {
    expect(eventId(RUN_ID, 'run.completed')).toBe('evt_1dc185ace5760154c6c3f7c0da5b34cc');
    expect(eventId(RUN_ID, 'run.failed')).toBe('evt_f4fc6eb7ea5fab31c65d8a276b3e1ae5');
  });

  it('has the evt_ prefix and a fixed-length hex body', () => {
    expect(eventId(RUN_ID, 'run.expired')).toMatch(/^evt_[0-9a-f]{32}$/);
  });

  it('differs by type', () => {
    const ids = new Set(EVENT_TYPES.map((t) => eventId(RUN_ID, t)));
    expect(ids.size).toBe(EVENT_TYPES.length);
  });

  it('differs by run', () => {
    expect(eventId('run-1', 'run.completed')).not.toBe(eventId('run-2', 'run.completed'));
    expect(eventId('run-1', 'run.completed')).not.toBe(eventId('run-10', 'run.completed'));
  });
});

describe('buildEvent', () => {
  it('builds the contract envelope from a run', () => {
    const e = buildEvent(input());
    expect(e).toEqual({
      id: eventId(RUN_ID, 'run.completed'),
      type: 'run.completed',
      timestamp: '2026-11-28T19:42:59.123Z',
      data: {
        run_id: RUN_ID,
        agent_id: 'agent-1',
        status: 'completed',
        stop_reason: 'end_turn',
        run: RUN,
        metadata: { team: 'a' },
        watch: { enqueued_at: '2026-11-28T19:40:00.000Z', detected_at: '2026-11-28T19:42:59.123Z', polls: 7, stalled_at: null },
      },
    });
  });

  it('has exactly the contract keys, in JSON too', () => {
    const e = JSON.parse(JSON.stringify(buildEvent(input()))) as Record<string, Record<string, unknown>>;
    expect(Object.keys(e).sort()).toEqual(['data', 'id', 'timestamp', 'type']);
    expect(Object.keys(e['data'] ?? {}).sort()).toEqual(['agent_id', 'metadata', 'run', 'run_id', 'status', 'stop_reason', 'watch']);
    expect(Object.keys((e['data']?.['watch'] ?? {}) as object).sort()).toEqual(['detected_at', 'enqueued_at', 'polls', 'stalled_at']);
  });

  it('writes ISO-8601 UTC timestamps', () => {
    const e = buildEvent(input());
    expect(e.timestamp).toMatch(ISO);
    expect(e.data.watch.enqueued_at).toMatch(ISO);
    expect(e.data.watch.detected_at).toMatch(ISO);
    expect(e.timestamp).toBe(e.data.watch.detected_at);
  });

  it('uses the same id as eventId for the run and type', () => {
    expect(buildEvent(input({ type: 'run.failed' })).id).toBe(eventId(RUN_ID, 'run.failed'));
  });

  it('sets agent_id, status, stop_reason and run to null when there is no run (not_found)', () => {
    const e = buildEvent(input({ type: 'run.not_found', run: null, metadata: null }));
    expect(e.type).toBe('run.not_found');
    expect(e.data).toMatchObject({ run_id: RUN_ID, agent_id: null, status: null, stop_reason: null, run: null, metadata: null });
    // null, not absent: receivers read these keys.
    expect(JSON.parse(JSON.stringify(e)).data).toHaveProperty('stop_reason', null);
  });

  it('sets status and stop_reason to null when the run has none (terminal before stop_reason is set)', () => {
    const e = buildEvent(input({ run: { agent_id: 'agent-1', status: 'cancelled', stop_reason: null } }));
    expect(e.data.status).toBe('cancelled');
    expect(e.data.stop_reason).toBeNull();
    const bare = buildEvent(input({ type: 'run.expired', run: { agent_id: 'agent-1' } }));
    expect(bare.data.status).toBeNull();
    expect(bare.data.stop_reason).toBeNull();
    expect(JSON.parse(JSON.stringify(bare)).data).toHaveProperty('status', null);
  });

  it('keeps the run as returned, including Letta callback fields', () => {
    expect(buildEvent(input()).data.run).toEqual(RUN);
  });
});

describe('lettaCallbackBody', () => {
  it('has exactly run_id, status, completed_at and metadata', () => {
    const body = lettaCallbackBody(buildEvent(input()));
    expect(body).toEqual({ run_id: RUN_ID, status: 'completed', completed_at: '2026-11-28T19:42:58.000001', metadata: { team: 'a' } });
    expect(Object.keys(JSON.parse(JSON.stringify(body))).sort()).toEqual(['completed_at', 'metadata', 'run_id', 'status']);
  });

  it('sends nulls, not missing keys, when there is no run', () => {
    const body = lettaCallbackBody(buildEvent(input({ type: 'run.not_found', run: null, metadata: null })));
    expect(JSON.parse(JSON.stringify(body))).toEqual({ run_id: RUN_ID, status: null, completed_at: null, metadata: null });
  });

  it('sends completed_at null when the run has none yet', () => {
    const body = lettaCallbackBody(buildEvent(input({ run: { agent_id: 'agent-1', status: 'completed' } })));
    expect(JSON.parse(JSON.stringify(body))).toEqual({ run_id: RUN_ID, status: 'completed', completed_at: null, metadata: { team: 'a' } });
  });
});
