import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import { Cluster, Redis } from 'ioredis';
import { freePort } from './redis-server.ts';

/**
 * Real Redis topologies on loopback for the production-Redis tests: a Redis Cluster (masters
 * with one replica each, made by `redis-cli --cluster create`) and a Sentinel group (a master,
 * a replica and one sentinel with quorum 1). Faults are the real ones: `redis-cli --cluster
 * reshard` moves slots (keys migrate, clients see ASK and MOVED), CLUSTER FAILOVER and
 * SENTINEL FAILOVER promote a replica.
 */
const run = promisify(execFile);

interface Node {
  port: number;
  child: ChildProcess;
}

async function waitForPing(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  probe.on('error', () => {});
  try {
    for (;;) {
      try {
        if (probe.status !== 'ready') await probe.connect();
        await probe.ping();
        return;
      } catch {
        if (Date.now() > deadline) throw new Error(`redis on port ${port} did not start`);
        probe.disconnect();
        await sleep(25);
      }
    }
  } finally {
    probe.disconnect();
  }
}

/** A free port whose cluster-bus port (port + 10000) is free too. */
async function clusterPort(taken: Set<number>): Promise<number> {
  for (;;) {
    const p = await freePort();
    if (p + 10_000 > 65_535 || taken.has(p)) continue;
    const bus = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(p + 10_000, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (bus) {
      taken.add(p);
      return p;
    }
  }
}

function startNode(dir: string, port: number, extra: string[]): ChildProcess {
  return spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'everysec', '--maxmemory-policy', 'noeviction', '--loglevel', 'warning', ...extra],
    { stdio: 'ignore' },
  );
}

async function stopChild(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise((r) => c.once('exit', r));
  c.kill('SIGTERM');
  await exited;
}

export interface RedisCluster {
  readonly ports: readonly number[];
  /** REDIS_CLUSTER_NODES for the daemon. */
  readonly seeds: string;
  /** A cluster client for the test itself. */
  client(): Cluster;
  /** node id and port of each master, and of each replica with its master's id. */
  topology(): Promise<{ masters: { id: string; port: number; slots: string }[]; replicas: { id: string; port: number; master: string }[] }>;
  /** Moves `slots` slots from the master on `fromPort` to the master on `toPort` (redis-cli --cluster reshard). */
  reshard(fromPort: number, toPort: number, slots: number): Promise<void>;
  /** Promotes the replica on `replicaPort` (CLUSTER FAILOVER) and waits until it is a master. */
  failover(replicaPort: number): Promise<void>;
  /** Waits until every node reports cluster_state:ok and agrees on the slots. */
  settled(): Promise<void>;
  destroy(): Promise<void>;
}

export async function startRedisCluster(options: { masters?: number; replicasPerMaster?: number } = {}): Promise<RedisCluster> {
  const masters = options.masters ?? 3;
  const perMaster = options.replicasPerMaster ?? 1;
  const dir = mkdtempSync(join(tmpdir(), 'lrw-cluster-'));
  const taken = new Set<number>();
  const nodes: Node[] = [];
  const total = masters * (1 + perMaster);
  for (let i = 0; i < total; i++) {
    const port = await clusterPort(taken);
    nodes.push({
      port,
      child: startNode(dir, port, ['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '2000', '--appendfilename', `aof-${port}.aof`, '--appenddirname', `aof-${port}`]),
    });
  }
  const ports = nodes.map((n) => n.port);
  const destroy = async () => {
    await Promise.all(nodes.map((n) => stopChild(n.child)));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await Promise.all(ports.map((p) => waitForPing(p)));
    await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', String(perMaster), '--cluster-yes'], { timeout: 60_000 });
  } catch (err) {
    await destroy();
    throw err;
  }

  const cli = (port: number, ...args: string[]) => run('redis-cli', ['-p', String(port), ...args], { timeout: 30_000 }).then((r) => r.stdout);

  async function topology() {
    const text = await cli(ports[0] as number, 'CLUSTER', 'NODES');
    const ms: { id: string; port: number; slots: string }[] = [];
    const rs: { id: string; port: number; master: string }[] = [];
    for (const line of text.trim().split('\n')) {
      const [id = '', addr = '', flags = '', master = '', , , , , ...slots] = line.split(' ');
      const port = Number(addr.split('@')[0]?.split(':')[1]);
      if (flags.includes('fail')) continue;
      if (flags.includes('master') && slots.length > 0) ms.push({ id, port, slots: slots.join(' ') });
      else if (flags.includes('slave')) rs.push({ id, port, master });
    }
    ms.sort((a, b) => Number(a.slots.split('-')[0]) - Number(b.slots.split('-')[0]));
    return { masters: ms, replicas: rs };
  }

  async function settled(): Promise<void> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const infos = await Promise.all(ports.map((p) => cli(p, 'CLUSTER', 'INFO').catch(() => '')));
      const ok = infos.every((i) => i.includes('cluster_state:ok'));
      let agree = false;
      if (ok) {
        const check = await run('redis-cli', ['--cluster', 'check', `127.0.0.1:${ports[0]}`], { timeout: 30_000 }).then((r) => r.stdout, (e: { stdout?: string }) => e.stdout ?? '');
        agree = check.includes('[OK] All nodes agree about slots configuration.') && check.includes('[OK] All 16384 slots covered.') && !check.includes('[WARNING]');
      }
      const t = ok && agree ? await topology() : undefined;
      if (t && t.masters.length === masters && t.replicas.length === total - masters) return;
      if (Date.now() > deadline) throw new Error(`cluster did not settle: ${infos.map((i) => /cluster_state:\w+/.exec(i)?.[0]).join(', ')}`);
      await sleep(200);
    }
  }

  await settled();
  return {
    ports,
    seeds: ports.slice(0, 3).map((p) => `127.0.0.1:${p}`).join(','),
    client() {
      const c = new Cluster(ports.slice(0, 3).map((port) => ({ host: '127.0.0.1', port })), { scaleReads: 'master' });
      c.on('error', () => {});
      return c;
    },
    topology,
    async reshard(fromPort, toPort, slots) {
      const t = await topology();
      const from = t.masters.find((m) => m.port === fromPort);
      const to = t.masters.find((m) => m.port === toPort);
      if (!from || !to) throw new Error(`reshard: ${fromPort} or ${toPort} is not a master`);
      await run('redis-cli', ['--cluster', 'reshard', `127.0.0.1:${fromPort}`, '--cluster-from', from.id, '--cluster-to', to.id, '--cluster-slots', String(slots), '--cluster-yes', '--cluster-pipeline', '100'], { timeout: 120_000 });
    },
    async failover(replicaPort) {
      await cli(replicaPort, 'CLUSTER', 'FAILOVER');
      const deadline = Date.now() + 30_000;
      while (!(await cli(replicaPort, 'ROLE')).startsWith('master')) {
        if (Date.now() > deadline) throw new Error(`replica ${replicaPort} did not become a master`);
        await sleep(100);
      }
      await settled();
    },
    settled,
    destroy,
  };
}

export interface RedisSentinel {
  readonly masterName: string;
  /** REDIS_SENTINELS for the daemon. */
  readonly sentinels: string;
  readonly ports: { master: number; replica: number; sentinel: number };
  /** The port of the node the sentinel says is master. */
  masterPort(): Promise<number>;
  /** SENTINEL FAILOVER, then waits until the sentinel names the other node. */
  failover(): Promise<number>;
  destroy(): Promise<void>;
}

/** A master, one replica and one sentinel (quorum 1) on loopback. */
export async function startRedisSentinel(masterName = 'lrw'): Promise<RedisSentinel> {
  const dir = mkdtempSync(join(tmpdir(), 'lrw-sentinel-'));
  const [master, replica, sentinel] = [await freePort(), await freePort(), await freePort()];
  const children: ChildProcess[] = [];
  children.push(startNode(dir, master, ['--appendfilename', 'm.aof', '--appenddirname', 'aof-m']));
  children.push(startNode(dir, replica, ['--replicaof', '127.0.0.1', String(master), '--appendfilename', 'r.aof', '--appenddirname', 'aof-r']));
  const conf = join(dir, 'sentinel.conf');
  writeFileSync(
    conf,
    [
      `port ${sentinel}`,
      'bind 127.0.0.1',
      `dir ${dir}`,
      `sentinel monitor ${masterName} 127.0.0.1 ${master} 1`,
      `sentinel down-after-milliseconds ${masterName} 1000`,
      `sentinel failover-timeout ${masterName} 5000`,
      `sentinel parallel-syncs ${masterName} 1`,
      '',
    ].join('\n'),
  );
  const destroy = async () => {
    await Promise.all(children.map(stopChild));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitForPing(master);
    await waitForPing(replica);
    children.push(spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' }));
    await waitForPing(sentinel);
  } catch (err) {
    await destroy();
    throw err;
  }
  const cli = (port: number, ...args: string[]) => run('redis-cli', ['-p', String(port), ...args], { timeout: 30_000 }).then((r) => r.stdout);
  const masterPort = async () => Number((await cli(sentinel, 'SENTINEL', 'get-master-addr-by-name', masterName)).trim().split('\n')[1]);
  // The replica must be in sync and known to the sentinel before a failover can pick it.
  const deadline = Date.now() + 30_000;
  while (!(await cli(replica, 'INFO', 'replication')).includes('master_link_status:up') || !(await cli(sentinel, 'SENTINEL', 'replicas', masterName)).includes(String(replica))) {
    if (Date.now() > deadline) {
      await destroy();
      throw new Error('sentinel group did not come up');
    }
    await sleep(100);
  }
  return {
    masterName,
    sentinels: `127.0.0.1:${sentinel}`,
    ports: { master, replica, sentinel },
    masterPort,
    async failover() {
      const before = await masterPort();
      await cli(sentinel, 'SENTINEL', 'FAILOVER', masterName);
      const until = Date.now() + 30_000;
      for (;;) {
        const now = await masterPort();
        if (now !== before && (await cli(now, 'ROLE')).startsWith('master')) return now;
        if (Date.now() > until) throw new Error('sentinel failover did not complete');
        await sleep(100);
      }
    },
    destroy,
  };
}
