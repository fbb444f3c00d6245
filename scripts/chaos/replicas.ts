import { spawnDaemon, type SpawnedDaemon } from '../../test/kit/daemon-process.ts';

/** One daemon replica: the kit's child process; `stop` gives null for a replica that had to be killed. */
export interface Replica {
  readonly daemon: SpawnedDaemon;
  ready(timeoutMs?: number): Promise<void>;
  kill9(): Promise<void>;
  stop(timeoutMs?: number): Promise<number | null>;
}

function spawnReplica(env: Record<string, string>): Replica {
  const daemon = spawnDaemon(env);
  return {
    daemon,
    ready: (timeoutMs = 30_000) => daemon.ready(timeoutMs),
    kill9: () => daemon.kill9(),
    // A replica that does not exit within the timeout is killed; the checks count its null.
    stop: (timeoutMs = 20_000) => daemon.stop(timeoutMs).catch(() => null),
  };
}

/**
 * The replicas in service (one slot each; a killed one is replaced in its slot) and every
 * replica ever started, whose output is scanned at the end and which are all killed when the
 * run is over.
 */
export interface ReplicaSet {
  /** The replicas in service, by slot. */
  readonly current: readonly Replica[];
  /** Starts `count` replicas with `env` and waits until each reports running. */
  launch(env: Record<string, string>, count: number): Promise<void>;
  /** Starts a fresh replica in slot `i` (not waiting for it to be ready). */
  replace(i: number): Replica;
  /** SIGTERM to the replicas in service; their exit codes (null: killed after a timeout). */
  stopAll(): Promise<(number | null)[]>;
  /** kill -9 to every replica ever started (those still alive). */
  killAll(): Promise<void>;
  /** The output of every replica ever started. */
  outputs(): string[];
}

export function replicaSet(): ReplicaSet {
  const current: Replica[] = [];
  const every: Replica[] = [];
  let env: Record<string, string> = {};
  const start = () => {
    const r = spawnReplica(env);
    every.push(r);
    return r;
  };
  return {
    current,
    async launch(e, count) {
      env = e;
      for (let i = 0; i < count; i++) current.push(start());
      await Promise.all(current.map((r) => r.ready()));
    },
    replace(i) {
      const r = start();
      current[i] = r;
      return r;
    },
    stopAll: () => Promise.all(current.map((r) => r.stop())),
    killAll: async () => {
      await Promise.all(every.map((r) => r.kill9()));
    },
    outputs: () => every.map((r) => r.daemon.output()),
  };
}
