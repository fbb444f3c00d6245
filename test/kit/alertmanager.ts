import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './redis-server.ts';

/**
 * A real Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback port, with its
 * own storage directory and clustering off (no gossip port, nothing leaves 127.0.0.1). Its
 * one receiver sends nothing: the tests read what it holds through its own API.
 */
export interface AlertmanagerAlert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAt: string;
  endsAt: string;
  status: { state: 'active' | 'suppressed' | 'unprocessed' };
}

export interface Alertmanager {
  /** `http://127.0.0.1:<port>`: the base URL a target of format alertmanager names. */
  readonly url: string;
  /** GET /api/v2/alerts: active alerts only unless `all` (Alertmanager never lists resolved ones). */
  alerts(all?: boolean): Promise<AlertmanagerAlert[]>;
  /** Resolved alerts it has received (its metric alertmanager_alerts_received_total{status="resolved"}). */
  resolvedReceived(): Promise<number>;
  stop(): Promise<void>;
}

export const ALERTMANAGER_BIN = 'prometheus-alertmanager';

const CONFIG = `route:
  receiver: blackhole
  group_wait: 1h
receivers:
  - name: blackhole
`;

export async function startAlertmanager(): Promise<Alertmanager> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'lrw-alertmanager-'));
  writeFileSync(join(dir, 'alertmanager.yml'), CONFIG);
  const url = `http://127.0.0.1:${port}`;
  let output = '';
  const child: ChildProcess = spawn(
    ALERTMANAGER_BIN,
    [`--config.file=${join(dir, 'alertmanager.yml')}`, `--storage.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--cluster.listen-address=', '--log.level=warn'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout?.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // A test process that dies takes its Alertmanager with it.
  const reap = () => child.kill('SIGKILL');
  process.once('exit', reap);

  for (let i = 0; ; i++) {
    try {
      const res = await fetch(`${url}/-/ready`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null || i > 200) {
      child.kill('SIGKILL');
      throw new Error(`alertmanager did not start on port ${port}: ${output}`);
    }
    await sleep(50);
  }

  return {
    url,
    async alerts(all = false) {
      const query = all ? '' : '?active=true&silenced=false&inhibited=false&unprocessed=true';
      const res = await fetch(`${url}/api/v2/alerts${query}`);
      if (!res.ok) throw new Error(`GET /api/v2/alerts answered ${res.status}`);
      return (await res.json()) as AlertmanagerAlert[];
    },
    async resolvedReceived() {
      const text = await (await fetch(`${url}/metrics`)).text();
      const lines = text.split('\n').filter((l) => l.startsWith('alertmanager_alerts_received_total{') && l.includes('status="resolved"'));
      return lines.reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    },
    async stop() {
      process.off('exit', reap);
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await Promise.race([exited, sleep(5000)]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
