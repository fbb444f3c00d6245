import { describe, it, expect } from 'vitest';
import { classifyRun, parseLettaTime } from '../../src/letta/run-state.ts';
import { classifyStatus } from '../../src/letta/http-status.ts';
import { parseRetryAfter } from '../../src/retry-after.ts';
import type { StatusClass } from '../../src/letta/http-status.ts';

describe('classifyStatus', () => {
  const table: [number, StatusClass][] = [
    [200, 'ok'],
    [204, 'ok'],
    [299, 'ok'],
    [404, 'not_found'],
    [400, 'bad_id'],
    [422, 'bad_id'],
    [401, 'auth'],
    [403, 'auth'],
    [408, 'transient'],
    [409, 'transient'],
    [425, 'transient'],
    [429, 'transient'],
    [500, 'transient'],
    [502, 'transient'],
    [503, 'transient'],
    [504, 'transient'],
    [599, 'transient'],
    [402, 'unexpected'],
    [405, 'unexpected'],
    [410, 'unexpected'],
    [413, 'unexpected'],
    [418, 'unexpected'],
    [301, 'unexpected'],
    [304, 'unexpected'],
    [100, 'unexpected'],
    [600, 'unexpected'],
  ];
  it.each(table)('%i is %s', (status, expected) => {
    expect(classifyStatus(status)).toBe(expected);
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('2025-10-17T21:53:00.000Z');

  it('reads delta-seconds as milliseconds', () => {
    expect(parseRetryAfter('1', now)).toBe(1000);
    expect(parseRetryAfter('0', now)).toBe(0);
    expect(parseRetryAfter(' 120 ', now)).toBe(120_000);
  });

  it('reads an HTTP date as the time left until it', () => {
    expect(parseRetryAfter('Fri, 17 Oct 2025 21:53:30 GMT', now)).toBe(30_000);
  });

  it('never returns a negative wait for a date in the past', () => {
    expect(parseRetryAfter('Fri, 17 Oct 2025 21:00:00 GMT', now)).toBe(0);
  });

  it('takes the first value when the header is repeated', () => {
    expect(parseRetryAfter(['2', '9'], now)).toBe(2000);
  });

  it('returns undefined when absent or empty', () => {
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
    expect(parseRetryAfter('', now)).toBeUndefined();
    expect(parseRetryAfter('   ', now)).toBeUndefined();
    expect(parseRetryAfter([], now)).toBeUndefined();
  });

  it('returns undefined for garbage', () => {
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter('in 5 minutes', now)).toBeUndefined();
    expect(parseRetryAfter('Fri, 99 Foo 2025 99:99:99 GMT', now)).toBeUndefined();
  });

  // Neither delta-seconds nor an HTTP date (RFC 9110 §10.2.3), but V8's lenient Date.parse
  // reads them as dates: '1.5' and '-5' as days in 2001 (a wait of 0), 'x 2099' as the year 2099.
  it.each(['-5', 'x 2099'])('returns undefined for %j, which only a lenient date parser reads', (value) => {
    expect(parseRetryAfter(value, now)).toBeUndefined();
  });

  it('does not read fractional seconds as a date in 2001 (a wait of 0)', () => {
    // Either refusing it or reading it as 1.5 s is fine; 0 ignores what the server asked.
    expect([undefined, 1500]).toContain(parseRetryAfter('1.5', now));
  });
});

describe('classifyRun', () => {
  it.each(['completed', 'failed', 'cancelled'] as const)('%s is terminal with event run.%s', (status) => {
    expect(classifyRun(status)).toEqual({ terminal: true, type: `run.${status}` });
  });

  it.each(['created', 'running', 'pending'])('%s is a known, not terminal status', (status) => {
    expect(classifyRun(status)).toEqual({ terminal: false, known: true });
  });

  it('flags an unknown status as not terminal and unknown', () => {
    expect(classifyRun('expired')).toEqual({ terminal: false, known: false });
    expect(classifyRun('requires_approval')).toEqual({ terminal: false, known: false });
    expect(classifyRun('COMPLETED')).toEqual({ terminal: false, known: false });
    expect(classifyRun('')).toEqual({ terminal: false, known: false });
  });

  it('treats a null or missing status as still running, not unknown', () => {
    expect(classifyRun(null)).toEqual({ terminal: false, known: true });
    expect(classifyRun(undefined)).toEqual({ terminal: false, known: true });
  });
});

describe('parseLettaTime', () => {
  it('reads a naive timestamp as UTC', () => {
    expect(parseLettaTime('2025-10-17T21:53:05.123456')).toBe(Date.parse('2025-10-17T21:53:05.123Z'));
    expect(parseLettaTime('2025-10-17T21:53:05')).toBe(Date.parse('2025-10-17T21:53:05Z'));
  });

  it('reads Z and offsets as written', () => {
    expect(parseLettaTime('2025-10-17T21:53:05.123Z')).toBe(Date.parse('2025-10-17T21:53:05.123Z'));
    expect(parseLettaTime('2025-10-17T21:53:05z')).toBe(Date.parse('2025-10-17T21:53:05Z'));
    expect(parseLettaTime('2025-10-17T23:53:05.123+02:00')).toBe(Date.parse('2025-10-17T21:53:05.123Z'));
    expect(parseLettaTime('2025-10-17T16:53:05.123456-05:00')).toBe(Date.parse('2025-10-17T21:53:05.123Z'));
    expect(parseLettaTime('2025-10-17T23:53:05+0200')).toBe(Date.parse('2025-10-17T21:53:05Z'));
  });

  it('returns undefined for garbage, empty and null', () => {
    expect(parseLettaTime('not a time')).toBeUndefined();
    expect(parseLettaTime('2025-13-45T99:99:99')).toBeUndefined();
    expect(parseLettaTime('')).toBeUndefined();
    expect(parseLettaTime(null)).toBeUndefined();
    expect(parseLettaTime(undefined)).toBeUndefined();
  });
});
