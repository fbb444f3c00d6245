import type { Config } from '../config.ts';
import { connectRedis, dropRedis } from '../redis/connection.ts';
import type { StoreContext } from '../redis/context.ts';
import { layoutFor } from '../redis/keys.ts';
import { defineScripts, type RedisClient } from '../redis/scripts.ts';

/** A short-lived connection for CLI commands (fail fast), and the store on it. */
export async function cliStore(config: Config): Promise<{ ctx: StoreContext; close(): void }> {
  const client: RedisClient = connectRedis(config, { kind: 'cli' }, 'letta-run-watcher-cli');
  const ctx: StoreContext = { client, scripts: defineScripts(client), layout: layoutFor(config.redis.keyPrefix, config.redis.partitions), replica: `cli-${process.pid}` };
  return { ctx, close: () => dropRedis(client) };
}

