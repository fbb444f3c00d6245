import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { layoutFor } from '../src/redis/keys.ts';
import { defineScripts } from '../src/redis/scripts.ts';
import { seeded } from '../tools/simulator/prng.ts';
import type { StoreContext } from '../src/redis/context.ts';
import { makeIntakeStore, type IntakeLimits } from '../src/intake/store.ts';
import { deletePrefix } from './kit/harness.ts';

/**
 * The intake rules are one definition (lua/includes/entry_rules.lua) run in two places: the
 * daemon's intake (intake.lua) and `enqueue`'s check (check-entries.lua). These tests hold the
 * two against each other on a seeded corpus of hostile entries, and hold the URL rule against
 * the WHATWG parser that delivery uses: whatever intake accepts, new URL() must read, with the
 * same host.
 */
let redis: Redis;
const prefixes: string[] = [];
const limits: IntakeLimits = { batch: 10_000, batchBytes: 64 << 20, maxEntryBytes: 65536, defaultMaxWatchMs: 3_600_000, maxWatchCapMs: 86_400_000, maxDepth: 32, maxTargetsPerRun: 16 };
const SEED = Number(process.env['LRW_SEED'] ?? 20261201);

beforeAll(() => {
  redis = new Redis(inject('redisUrl'));
  console.log(`intake rules corpus seed ${SEED} (LRW_SEED=${SEED} to repeat)`);
});
afterAll(() => redis.disconnect());
afterEach(async () => {
  for (const p of prefixes.splice(0)) await deletePrefix(redis, p);
});

function store(): StoreContext {
  const prefix = `rules-${randomBytes(5).toString('hex')}`;
  prefixes.push(prefix);
  return { client: redis, scripts: defineScripts(redis), layout: layoutFor(prefix), replica: 'r1' };
}

/** URL-shaped strings, from plausible to hostile. */
function urls(random: () => number, n: number): string[] {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T;
  const hosts = [
    'example.com', 'EXAMPLE.com', 'a-b.example', '-a-.com', 'a..b', '.a', 'a.', 'xn--nxasmq6b.com', 'xn--zz', 'a_b.com', 'x'.repeat(64) + '.com',
    '1.2.3.4', '01.2.3.4', '1.2.3', '256.1.1.1', '1.2.3.0x10', '0x7f.1', 'a.1', 'a.b1', '1.2.3.4.', '[::1]', '[1:2:3:4:5:6:7:8]', '[1::2::3]',
    '[:::]', '[::ffff:1.2.3.4]', '[zz]', '[::1', '', '%zz', 'ex\u00e4mple.com', 'a b', 'user:pw@example.com', 'example.com\\evil',
  ];
  const ports = ['', ':80', ':0', ':65535', ':65536', ':99999', ':', ':08', ':a'];
  const paths = ['', '/', '/h?x=1', '/%zz', '/a b', '/\u00e9', '#frag', '?q', '/a\\b', '/[x]', '/{}|^`'];
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const scheme = pick(['http://', 'https://', 'HTTP://', 'ftp://', 'http:/', 'http:']);
    out.push(`${scheme}${pick(hosts)}${pick(ports)}${pick(paths)}`);
  }
  return out;
}

function entries(random: () => number, n: number): string[] {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T;
  const nest = (depth: number): unknown => (depth === 0 ? 1 : { a: nest(depth - 1) });
  const out: string[] = [];
  const u = urls(random, n);
  for (let i = 0; i < n; i++) {
    const id = pick(['run-ok', `run-${i}`, 'r', '', 'bad id', 'a/b', '..', 'x'.repeat(129), '_x', 7]);
    const shape = pick(['bare', 'json', 'json', 'json']);
    if (shape === 'bare') {
      out.push(typeof id === 'string' ? `${pick(['', ' ', '\n'])}${id}${pick(['', ' ', '\t'])}` : String(id));
      continue;
    }
    const o: Record<string, unknown> = { run_id: id };
    if (random() < 0.6) o[pick(['webhook_url', 'callback_url'])] = u[i];
    if (random() < 0.3) o['metadata'] = pick<unknown>([{ a: 1 }, [], {}, 'x', null, nest(Math.floor(random() * 40))]);
    if (random() < 0.3) o['max_watch_ms'] = pick([1, 0, -1, 1.5, 86_400_000, 86_400_001, '10']);
    out.push(JSON.stringify(o));
  }
  return out;
}

describe('the intake rules', () => {
  it('enqueue\'s check and the daemon\'s intake give every entry the same verdict and reason', async () => {
    const ctx = store();
    const corpus = entries(seeded(SEED), 1500);
    const checked = await makeIntakeStore(ctx, limits).check(corpus);
    // Through the intake one at a time, so each verdict can be read back.
    const intake = makeIntakeStore(ctx, limits);
    const dead = ctx.layout.partitions[0]!.dead;
    const disagree: string[] = [];
    let accepted = 0;
    for (const [i, entry] of corpus.entries()) {
      await redis.del(ctx.layout.partitions[0]!.runs, ctx.layout.partitions[0]!.due, dead);
      await redis.lpush(ctx.layout.intake, entry);
      const r = await intake.take();
      const reason = r.rejected === 1 ? (JSON.parse((await redis.lindex(dead, 0)) ?? '{}') as { reason: string }).reason : '';
      if (reason === '') accepted++;
      if (reason !== checked[i]) disagree.push(`${entry.slice(0, 120)}: intake says ${JSON.stringify(reason)}, check says ${JSON.stringify(checked[i])}`);
    }
    expect(disagree).toEqual([]);
    // The corpus exercises both sides.
    expect(accepted).toBeGreaterThan(100);
    expect(corpus.length - accepted).toBeGreaterThan(100);
  });

  it('every URL the rule accepts, new URL() reads too, with the same host', async () => {
    const ctx = store();
    const random = seeded(SEED + 1);
    const candidates = [...new Set(urls(random, 4000))];
    const verdicts = await makeIntakeStore(ctx, limits).check(candidates.map((u) => JSON.stringify({ run_id: 'run-x', webhook_url: u })));
    const problems: string[] = [];
    let accepted = 0;
    candidates.forEach((u, i) => {
      if (verdicts[i] !== '') return;
      accepted++;
      let parsed: URL;
      try {
        parsed = new URL(u);
      } catch {
        problems.push(`${u}: accepted, but new URL() throws`);
        return;
      }
      const written = /^[a-z]+:\/\/([^/?#]*)/i.exec(u)?.[1]?.replace(/:\d+$/, '').toLowerCase() ?? '';
      if (parsed.hostname !== written) problems.push(`${u}: host read as ${parsed.hostname}`);
      if (parsed.username || parsed.password) problems.push(`${u}: carries credentials`);
    });
    expect(problems).toEqual([]);
    expect(accepted).toBeGreaterThan(100);
  });
});
