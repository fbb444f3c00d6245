import { describe, expect, it } from 'vitest';
import { manualClock } from '../../src/clock.ts';
import { makeLogger } from '../../src/log.ts';
import { makeApiGate, type ApiGateState } from '../../src/polling/api-gate.ts';

/**
 * The API gate's states (polling/api-gate.ts), driven by the manual clock: open; paused for
 * credentials or for a base URL that is not Letta, with one probe per probeEveryMs; open again
 * on an answer that shows the API is fine.
 */
const PROBE_MS = 30_000;

function gate() {
  const clock = manualClock(1_000_000);
  const changes: ApiGateState[] = [];
  const g = makeApiGate({ clock, probeEveryMs: PROBE_MS, log: makeLogger('silent'), baseUrl: 'https://letta.test', onChange: (s) => changes.push(s) });
  return { g, clock, changes };
}

describe('the API gate', () => {
  it('starts open: polls go, no probe is due, ready', () => {
    const { g } = gate();
    expect(g.current).toEqual({ state: 'open' });
    expect(g.open).toBe(true);
    expect(g.takeProbe()).toBe(false);
    expect(g.msToProbe).toBe(0);
    expect(g.notReadyReason).toBeUndefined();
  });

  it('paused for credentials: one probe per probeEveryMs, never two, and readiness says why', () => {
    const { g, clock, changes } = gate();
    g.pause('credentials', 'it answered 401');
    expect(g.open).toBe(false);
    expect(g.current).toMatchObject({ state: 'paused', reason: 'credentials' });
    expect(g.notReadyReason).toContain('refused our credentials (it answered 401); check LETTA_API_KEY');
    expect(g.takeProbe()).toBe(false);
    expect(g.msToProbe).toBe(PROBE_MS);
    clock.advance(PROBE_MS - 1);
    expect(g.takeProbe()).toBe(false);
    clock.advance(1);
    expect(g.takeProbe()).toBe(true);
    expect(g.takeProbe()).toBe(false);
    expect(g.msToProbe).toBe(PROBE_MS);
    clock.advance(PROBE_MS);
    expect(g.takeProbe()).toBe(true);
    expect(changes).toHaveLength(1);
  });

  it('a second pause for the same reason changes nothing (no new log line, no reset of the probe time)', () => {
    const { g, clock, changes } = gate();
    g.pause('credentials', '401');
    clock.advance(PROBE_MS / 2);
    g.pause('credentials', '403');
    expect(changes).toHaveLength(1);
    expect(g.msToProbe).toBe(PROBE_MS / 2);
  });

  it('a pause for another reason replaces the first: not Letta after credentials', () => {
    const { g, changes } = gate();
    g.pause('credentials', '401');
    g.pause('not-letta', 'GET /v1/health/ answered 404');
    expect(g.current).toMatchObject({ state: 'paused', reason: 'not-letta' });
    expect(g.notReadyReason).toContain('https://letta.test does not answer like a Letta API');
    expect(changes.map((c) => (c.state === 'paused' ? c.reason : c.state))).toEqual(['credentials', 'not-letta']);
  });

  it('resumes on an answer that shows the API is fine, and stays open on a second resume', () => {
    const { g, changes } = gate();
    g.pause('not-letta', '404');
    g.resume();
    g.resume();
    expect(g.open).toBe(true);
    expect(g.notReadyReason).toBeUndefined();
    expect(changes.map((c) => c.state)).toEqual(['paused', 'open']);
  });
});
