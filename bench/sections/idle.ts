import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { layoutFor } from '../../src/redis/keys.ts';
import { startSimulator } from '../../tools/simulator/server.ts';
import { commandStats, daemonReady, startDaemon, statDelta } from '../support.ts';
import type { BenchContext, Idle, Outcome } from '../types.ts';

/**
 * 8. An idle replica: nothing watched, nothing to deliver. How many Redis commands a second it
 * sends (its loops sleep until the next due time, and the intake waits with a blocking
 * command), and how fast an entry pushed then is taken (the blocking wait wakes at once).
 */

export async function benchIdle({ redis, sizes }: BenchContext): Promise<Idle> {
  const seconds = sizes.idleS;
  const r = redis.client;
  const sim = await startSimulator({ port: 0 });
  const prefix = `lw-idle-${randomUUID().slice(0, 8)}`;
  const layout = layoutFor(prefix);
  const d = startDaemon({ redisUrl: redis.url, apiUrl: sim.url, env: { WATCHER_KEY_PREFIX: prefix } });
  try {
    await daemonReady(r, d);
    await sleep(3000);
    const before = await commandStats(r);
    await sleep(seconds * 1000);
    const after = await commandStats(r);
    const delta = statDelta(before, after);
    // Our own INFO call is in the second reading.
    const info = delta.get('info');
    if (info) info.calls -= 1;
    let total = 0;
    const byCommand: [string, number][] = [];
    for (const [name, s] of delta) {
      if (s.calls <= 0) continue;
      total += s.calls;
      byCommand.push([name, s.calls]);
    }
    byCommand.sort((a, b) => b[1] - a[1]);
    // An entry pushed now: how long until the daemon has it in the watch state?
    const id = sim.createRun({ outcome: 'never' }).id;
    const t0 = performance.now();
    await r.lpush(layout.intake, id);
    while ((await r.hexists(layout.partitions[0]!.runs, id)) === 0 && performance.now() - t0 < 10_000) await sleep(1);
    const intakeLatencyMs = performance.now() - t0;
    return { seconds, commandsPerSecond: total / seconds, byCommand, intakeLatencyMs };
  } finally {
    await d.stop();
    await sim.close();
  }
}

export function idleOutcome(i: Idle): Outcome {
  return {
    targets: [
      { figure: 'Idle replica: Redis commands per second', target: '≤ 2', value: i.commandsPerSecond.toFixed(2), met: i.commandsPerSecond <= 2 },
      { figure: 'Idle replica: intake latency', target: '< 100 ms', value: `${i.intakeLatencyMs.toFixed(0)} ms`, met: i.intakeLatencyMs < 100 },
    ],
    figures: [
      {
        name: 'idle',
        text: `${i.commandsPerSecond.toFixed(2)} Redis commands/s while idle (${i.byCommand.map(([c, n]) => `${c} ${n}`).join(', ')}); an entry pushed then taken in ${i.intakeLatencyMs.toFixed(0)} ms`,
      },
    ],
  };
}
