import { parseArgs } from 'node:util';
import { intakeLimits, loadConfig } from '../config.ts';
import { DaemonError } from '../errors.ts';
import { makeIntakeStore } from '../intake/store.ts';
import { EXIT_OK, print } from './output.ts';
import { cliStore } from './store.ts';

export const enqueueUsage = `Usage: letta-run-watcher enqueue RUN_ID... [--webhook URL] [--metadata JSON] [--max-watch-ms N]

Pushes runs onto the intake list, after checking them with the intake's own rules (run by
Redis): nothing is pushed when one would be refused, and the error names why.
`;

/**
 * The entry a producer would push: a bare ID when there is nothing else to say, JSON
 * otherwise. Whether it is valid is the intake rules' to say (see enqueue).
 */
function buildEntry(runId: string, o: { webhookUrl?: string | undefined; metadata?: unknown; maxWatchMs?: number | undefined }): string {
  if (o.webhookUrl === undefined && o.metadata === undefined && o.maxWatchMs === undefined) return runId;
  return JSON.stringify({
    run_id: runId,
    ...(o.webhookUrl === undefined ? {} : { webhook_url: o.webhookUrl }),
    ...(o.metadata === undefined ? {} : { metadata: o.metadata }),
    ...(o.maxWatchMs === undefined ? {} : { max_watch_ms: o.maxWatchMs }),
  });
}

export async function enqueue(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      webhook: { type: 'string' },
      metadata: { type: 'string' },
      'max-watch-ms': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return print(enqueueUsage);
  if (positionals.length === 0) throw new DaemonError('ERR_USAGE', 'enqueue needs at least one RUN_ID');
  let metadata: unknown;
  if (values.metadata !== undefined) {
    try {
      metadata = JSON.parse(values.metadata);
    } catch {
      throw new DaemonError('ERR_USAGE', `--metadata is not valid JSON: ${JSON.stringify(values.metadata.slice(0, 200))}`);
    }
  }
  const rawMax = values['max-watch-ms'];
  if (rawMax !== undefined && !/^\d+$/.test(rawMax)) throw new DaemonError('ERR_USAGE', `--max-watch-ms ${JSON.stringify(rawMax)} is not a whole number of milliseconds`);
  const maxWatchMs = rawMax === undefined ? undefined : Number(rawMax);
  const entries = positionals.map((id) => buildEntry(id, { webhookUrl: values.webhook, metadata, maxWatchMs }));
  const config = loadConfig({ env: process.env });
  const { ctx, close } = await cliStore(config);
  try {
    // The intake's own rules, run by Redis (lua/check-entries.lua): what passes here is what
    // the daemon accepts, and what fails names the same reason it would dead-letter.
    const store = makeIntakeStore(ctx, intakeLimits(config));
    const reasons = await store.check(entries);
    const bad = reasons.flatMap((reason, i) => (reason === '' ? [] : [`  ${positionals[i]}: ${reason}`]));
    if (bad.length > 0) throw new DaemonError('ERR_USAGE', `nothing enqueued; the intake would refuse:\n${bad.join('\n')}`);
    await ctx.client.lpush(ctx.layout.intake, ...entries);
  } finally {
    close();
  }
  process.stdout.write(`enqueued ${entries.length} run${entries.length === 1 ? '' : 's'}\n`);
  return EXIT_OK;
}

