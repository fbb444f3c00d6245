import { parseArgs } from 'node:util';
import { loadConfig } from '../config.ts';
import { readStatus } from '../ops/status.ts';
import { print } from './output.ts';
import { cliStore } from './store.ts';

export const statusUsage = `Usage: letta-run-watcher status [--json]

Intake depth, runs watched, due now, webhook backlog, dead letters, events in the stream(s),
the ops stream and the endpoints failing, summed over every partition.
`;

export async function status(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) return print(statusUsage);
  const config = loadConfig({ env: process.env });
  const { ctx, close } = await cliStore(config);
  let s;
  try {
    s = await readStatus(ctx);
  } finally {
    close();
  }
  if (values.json) return print(JSON.stringify(s));
  const rows: [string, number | string][] = [
    ['intake depth', s.intake],
    ['runs watched', s.watched],
    ['due now', s.due_now],
    ['webhook backlog', s.webhook_backlog],
    ['dead letters', s.dead_letters],
    ['events in stream', s.events],
    ['partitions', s.partitions],
    ['event streams', s.event_streams.join(' ')],
    ['ops stream', s.ops_stream],
    ['endpoints failing', s.endpoints_failing],
  ];
  return print(rows.map(([k, v]) => `${k.padEnd(18)}${v}`).join('\n'));
}

