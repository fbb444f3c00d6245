import { describe, expect, it } from 'vitest';
import { isDaemonError } from '../../src/errors.ts';
import { buildEntry } from '../../src/intake.ts';
import type { EntryOptions } from '../../src/intake.ts';

const ID = 'run-123e4567-e89b-12d3-a456-426614174000';

function usageError(runId: string, o?: EntryOptions): Error {
  try {
    buildEntry(runId, o);
  } catch (err) {
    expect(isDaemonError(err, 'ERR_USAGE')).toBe(true);
    return err as Error;
  }
  throw new Error(`expected buildEntry(${JSON.stringify(runId)}) to throw`);
}

describe('buildEntry', () => {
  it('returns the bare run id when there are no options', () => {
    expect(buildEntry(ID)).toBe(ID);
    expect(buildEntry(ID, {})).toBe(ID);
    expect(buildEntry(ID, { webhookUrl: undefined, metadata: undefined, maxWatchMs: undefined })).toBe(ID);
  });

  it('returns JSON with the contract field names when there are options', () => {
    const entry = buildEntry(ID, { webhookUrl: 'https://hooks.test/letta?x=1', metadata: { team: 'a', n: 1 }, maxWatchMs: 3_600_000 });
    expect(JSON.parse(entry)).toEqual({ run_id: ID, webhook_url: 'https://hooks.test/letta?x=1', metadata: { team: 'a', n: 1 }, max_watch_ms: 3_600_000 });
  });

  it('includes only the options given', () => {
    expect(JSON.parse(buildEntry(ID, { webhookUrl: 'http://127.0.0.1:9000/h' }))).toEqual({ run_id: ID, webhook_url: 'http://127.0.0.1:9000/h' });
    expect(JSON.parse(buildEntry(ID, { metadata: {} }))).toEqual({ run_id: ID, metadata: {} });
    expect(JSON.parse(buildEntry(ID, { maxWatchMs: 1 }))).toEqual({ run_id: ID, max_watch_ms: 1 });
  });

  it('accepts ids at the edges of the rule', () => {
    expect(buildEntry('a')).toBe('a');
    expect(buildEntry('0_-')).toBe('0_-');
    const longest = `r${'x'.repeat(127)}`;
    expect(buildEntry(longest)).toBe(longest);
  });

  it.each([
    ['../x'],
    ['run-1/../../admin'],
    [''],
    [`r${'x'.repeat(128)}`],
    ['rün-1'],
    ['run-😀'],
    ['-run-1'],
    ['_run'],
    ['run 1'],
    ['run-1\n'],
    ['run.1'],
    ['run%2F1'],
  ])('rejects the run id %j', (id) => {
    const err = usageError(id);
    expect(err.message).toContain('run ID');
  });

  it.each([['ftp://hooks.test/h'], ['hooks.test/h'], ['//hooks.test/h'], ['https://'], ['https:///path'], ['mailto:a@b.test'], ['']])(
    'rejects the webhook URL %j',
    (url) => {
      const err = usageError(ID, { webhookUrl: url });
      expect(err.message).toContain('--webhook');
    },
  );

  it('accepts an upper-case scheme, as the daemon does', () => {
    expect(JSON.parse(buildEntry(ID, { webhookUrl: 'HTTPS://hooks.test/h' }))).toMatchObject({ webhook_url: 'HTTPS://hooks.test/h' });
  });

  // The daemon's intake script dead-letters these (src/schedule.ts valid_url); buildEntry promises
  // to reject what the daemon would dead-letter.
  it.each([['https://hooks.test/a b'], ['https://hooks.test/a\tb'], ['https://hooks.test/h\n']])(
    'rejects the webhook URL %j with whitespace or control characters',
    (url) => {
      usageError(ID, { webhookUrl: url });
    },
  );

  it('rejects a webhook URL longer than the daemon accepts (2048 characters)', () => {
    usageError(ID, { webhookUrl: `https://hooks.test/${'a'.repeat(2048)}` });
  });

  it.each([[1.5], [0], [-1], [Number.NaN], [Number.POSITIVE_INFINITY]])('rejects max watch %d', (ms) => {
    const err = usageError(ID, { maxWatchMs: ms });
    expect(err.message).toContain('--max-watch-ms');
  });

  it('checks the id before the options', () => {
    expect(usageError('../x', { webhookUrl: 'ftp://x' }).message).toContain('run ID');
  });
});
