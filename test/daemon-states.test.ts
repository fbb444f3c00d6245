import { describe, expect, it } from 'vitest';
import { manualClock } from '../src/clock.ts';
import { Daemon, type DaemonState } from '../src/daemon.ts';
import { isDaemonError } from '../src/errors.ts';
import { captureLogger, keys, testConfig, useSuite, waitFor } from './kit/harness.ts';
import { freePort } from './kit/redis-server.ts';

/**
 * The daemon's named states (daemon.ts DaemonState), as its log line of each change says them:
 * starting → running → draining → stopped; starting → draining → stopped when stopped while it
 * waits for Redis (start() then rejects ERR_STOPPED); starting → failed when start-up meets an
 * error that waiting cannot mend. Time is the manual clock's: the start-up retry waits on it.
 */
const { redis, cleanup } = useSuite();

function daemonWith(overrides: Record<string, string>): { daemon: Daemon; prefix: string; states: () => DaemonState[]; clock: ReturnType<typeof manualClock> } {
  const { log, lines } = captureLogger('info');
  const clock = manualClock(Date.now());
  const config = testConfig({ LETTA_BASE_URL: 'http://127.0.0.1:9', ...overrides });
  const daemon = new Daemon({ config, log, clock });
  cleanup.add(() => daemon.stop().catch(() => {}));
  const states = () => lines.filter((l) => typeof l['to'] === 'string' && String(l['msg']).startsWith('daemon ')).map((l) => l['to'] as DaemonState);
  return { daemon, prefix: config.redis.keyPrefix, states, clock };
}

describe('daemon states', () => {
  it('starting → running → draining → stopped, each logged once; stop() twice is one stop', async () => {
    const { daemon, states } = daemonWith({});
    expect(daemon.state).toBe('starting');
    await daemon.start();
    expect(daemon.state).toBe('running');
    await Promise.all([daemon.stop(), daemon.stop()]);
    expect(daemon.state).toBe('stopped');
    expect(states()).toEqual(['running', 'draining', 'stopped']);
  });

  it('stopped while waiting for Redis: draining → stopped, and start() rejects with ERR_STOPPED', async () => {
    const port = await freePort();
    const { daemon, states, clock } = daemonWith({ REDIS_URL: `redis://127.0.0.1:${port}` });
    const started = daemon.start().catch((err: unknown) => err);
    // Nothing listens there: start-up keeps waiting, on the manual clock, however long.
    await waitFor(async () => (await daemon.notReady()).includes('Redis is not connected'));
    clock.advance(60_000);
    expect(daemon.state).toBe('starting');
    // Promptly: start-up's commands would wait out their 10 s timeout for a connection.
    const stopping = Date.now();
    await daemon.stop();
    expect(Date.now() - stopping).toBeLessThan(5_000);
    expect(isDaemonError(await started, 'ERR_STOPPED')).toBe(true);
    expect(daemon.state).toBe('stopped');
    expect(states()).toEqual(['draining', 'stopped']);
  });

  it('start-up that meets an error waiting cannot mend (the layout record says other partitions) ends failed, with the error', async () => {
    const { daemon, prefix, states } = daemonWith({});
    await redis.hset(keys(prefix).meta, 'version', '2', 'partitions', '3');
    const err = await daemon.start().catch((e: unknown) => e);
    expect(isDaemonError(err, 'ERR_LAYOUT')).toBe(true);
    expect((err as Error).message).toContain('holds the state of 3 partitions, but WATCHER_PARTITIONS is 1');
    expect(daemon.state).toBe('failed');
    expect(states()).toEqual(['failed']);
    // Everything it had opened is released: it no longer holds a Redis connection.
    expect(await daemon.notReady()).toContain('Redis is not connected');
  });
});
