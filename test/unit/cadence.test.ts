import { describe, it, expect } from 'vitest';
import { nextPollDelay } from '../../src/polling/cadence.ts';
import type { CadenceOptions } from '../../src/polling/cadence.ts';

const noJitter: CadenceOptions = { initialMs: 1000, maxMs: 30_000, factor: 2, jitter: 0 };
const mid = () => 0.5;

describe('nextPollDelay', () => {
  it('starts at initialMs and grows by factor per poll', () => {
    expect([1, 2, 3, 4, 5].map((n) => nextPollDelay(n, noJitter, mid))).toEqual([1000, 2000, 4000, 8000, 16_000]);
  });

  it('treats zero polls done like the first gap', () => {
    expect(nextPollDelay(0, noJitter, mid)).toBe(1000);
  });

  it('is capped at maxMs, even after very many polls', () => {
    expect(nextPollDelay(6, noJitter, mid)).toBe(30_000);
    expect(nextPollDelay(10_000, noJitter, mid)).toBe(30_000);
  });

  it('keeps jitter within ±jitter of the base', () => {
    const o: CadenceOptions = { initialMs: 1000, maxMs: 30_000, factor: 1.6, jitter: 0.2 };
    expect(nextPollDelay(1, o, () => 0)).toBe(800);
    expect(nextPollDelay(1, o, () => 0.5)).toBe(1000);
    expect(nextPollDelay(1, o, () => 1)).toBe(1200);
    expect(nextPollDelay(3, o, () => 0)).toBe(Math.round(1000 * 1.6 ** 2 * 0.8));
    expect(nextPollDelay(3, o, () => 1)).toBe(Math.round(1000 * 1.6 ** 2 * 1.2));
  });

  it('never jitters above maxMs once capped', () => {
    const o: CadenceOptions = { initialMs: 1000, maxMs: 30_000, factor: 2, jitter: 0.2 };
    expect(nextPollDelay(20, o, () => 1)).toBe(30_000);
    expect(nextPollDelay(20, o, () => 0)).toBe(24_000);
  });

  it('is never below 1 ms', () => {
    expect(nextPollDelay(1, { initialMs: 1, maxMs: 10, factor: 1, jitter: 1 }, () => 0)).toBe(1);
    expect(nextPollDelay(1, { initialMs: 0.1, maxMs: 10, factor: 1, jitter: 0 }, mid)).toBe(1);
  });

  it('returns whole milliseconds', () => {
    const o: CadenceOptions = { initialMs: 1000, maxMs: 30_000, factor: 1.6, jitter: 0.2 };
    for (const r of [0, 0.123, 0.5, 0.777, 1]) {
      expect(Number.isInteger(nextPollDelay(4, o, () => r))).toBe(true);
    }
  });
});
