import type { TestProject } from 'vitest/node';
import { startRedisServer, type RedisServer } from './redis-server.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

let server: RedisServer | undefined;

/** One shared Redis for suites that do not stop it; each test uses its own key prefix. */
export async function setup(project: TestProject): Promise<void> {
  const fromEnv = process.env['REDIS_URL'];
  if (fromEnv) {
    project.provide('redisUrl', fromEnv);
    return;
  }
  server = await startRedisServer({ appendOnly: false });
  project.provide('redisUrl', server.url);
}

export async function teardown(): Promise<void> {
  await server?.destroy();
}
