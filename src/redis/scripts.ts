import { readFileSync } from 'node:fs';
import type { ChainableCommander, Cluster, Redis } from 'ioredis';

/**
 * The Lua scripts (lua/*.lua, each headed by its KEYS, ARGV and reply), loaded once and
 * defined on a client with ioredis's defineCommand, which sends EVALSHA and falls back to EVAL
 * when Redis has lost its script cache (a restart, a failover). A line `--- @include name`
 * pulls in lua/includes/name.lua, once per script, as BullMQ's command files do.
 */
export type RedisClient = Redis | Cluster;

export const SCRIPTS = [
  'intake',
  'check-entries',
  'intake-take',
  'intake-done',
  'claim',
  'settle',
  'renew',
  'delivery-claim',
  'delivery-settle',
  'release',
  'stall-order',
  'endpoint-health',
  'reconcile',
  'hint',
  'budget',
  'dead-replay',
  'trim-events',
  'probe',
  'migrate-v1',
] as const;
export type ScriptName = (typeof SCRIPTS)[number];

const LUA_DIR = new URL('./lua/', import.meta.url);

/** The source of a script with its includes spliced in (what Redis runs). */
export function scriptSource(name: ScriptName): string {
  const seen = new Set<string>();
  const expand = (text: string): string =>
    text.replace(/^--- @include (\S+)\s*$/gm, (_line, include: string) => {
      if (seen.has(include)) return '';
      seen.add(include);
      return expand(readFileSync(new URL(`includes/${include}.lua`, LUA_DIR), 'utf8'));
    });
  return expand(readFileSync(new URL(`${name}.lua`, LUA_DIR), 'utf8'));
}

/** ioredis command name for a script: `lrw_` and the file name in snake case. */
function commandName(name: ScriptName): string {
  return `lrw_${name.replaceAll('-', '_')}`;
}

type Arg = string | number | Buffer;
type Call = (...args: Arg[]) => Promise<unknown>;

export interface Scripts {
  /** Runs a script: `keys` are its KEYS, `args` its ARGV. */
  run(name: ScriptName, keys: readonly string[], args: readonly Arg[]): Promise<unknown>;
  /** A pipeline holding these script calls, to chain more commands onto (same connection). */
  pipeline(calls: readonly [name: ScriptName, keys: readonly string[], args: readonly Arg[]][]): ChainableCommander;
}

const sources = new Map<ScriptName, string>();

/** Defines every script on `client` (once per client) and returns the caller. */
export function defineScripts(client: RedisClient): Scripts {
  const commands = client as unknown as Record<string, Call | undefined>;
  for (const name of SCRIPTS) {
    if (commands[commandName(name)] !== undefined) continue;
    let lua = sources.get(name);
    if (lua === undefined) {
      lua = scriptSource(name);
      sources.set(name, lua);
    }
    client.defineCommand(commandName(name), { lua });
  }
  const call = (method: string, keys: readonly string[], args: readonly Arg[]) => {
    const fn = commands[method];
    if (!fn) throw new Error(`script ${method} is not defined`);
    return fn.call(client, keys.length, ...keys, ...args);
  };
  return {
    run: (name, keys, args) => call(commandName(name), keys, args),
    pipeline(calls) {
      const pipe = client.pipeline();
      const methods = pipe as unknown as Record<string, Call | undefined>;
      for (const [name, keys, args] of calls) {
        const fn = methods[commandName(name)];
        if (!fn) throw new Error(`script ${name} is not defined`);
        void fn.call(pipe, keys.length, ...keys, ...args);
      }
      return pipe;
    },
  };
}
