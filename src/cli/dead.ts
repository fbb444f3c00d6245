import { parseArgs } from 'node:util';
import { intakeLimits, loadConfig } from '../config.ts';
import { listDeadLetters, purgeDeadLetters, replayDeadLetters, selectDeadLetters, type DeadFilter } from '../dead-letters.ts';
import { DaemonError } from '../errors.ts';
import { print } from './output.ts';
import { cliStore } from './store.ts';

/** An unambiguous time: ISO 8601 with a zone, or a date (midnight UTC). */
function isoTime(flag: string, v: string): number {
  const iso = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2}))?$/;
  const at = iso.test(v) ? Date.parse(v) : Number.NaN;
  if (Number.isNaN(at)) {
    throw new DaemonError('ERR_USAGE', `--${flag} ${JSON.stringify(v)} is not a time: use ISO 8601 with a zone (2026-11-28T10:00:00Z) or a date (2026-11-28, midnight UTC)`);
  }
  return at;
}

/** `dead list` shows this many unless --limit says otherwise. */
const LIST_LIMIT = 1000;
/** replay and purge choose among every letter there is (up to this many). */
const ALL_LETTERS = 1_000_000;

export const deadUsage = `Usage: letta-run-watcher dead list [--json] [--limit N]
       letta-run-watcher dead replay (--all | --index N... | --since ISO_TIME)
       letta-run-watcher dead purge (--all | --index N... | --before ISO_TIME)

Index 0 is the newest dead letter, as 'dead list' shows. Replay puts a webhook delivery back
in the outbox (re-enabling an endpoint that answered 410) and runs an intake entry through the
intake rules again; an entry cut to 1 KiB when it was rejected cannot be replayed and is left.
Times are ISO 8601 with a zone (2026-11-28T10:00:00Z) or a date (2026-11-28, midnight UTC).
`;

export async function dead(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === '--help' || sub === '-h') return print(deadUsage);
  const { values } = parseArgs({
    args: rest,
    options: {
      json: { type: 'boolean' },
      limit: { type: 'string' },
      all: { type: 'boolean' },
      index: { type: 'string', multiple: true },
      since: { type: 'string' },
      before: { type: 'string' },
    },
  });
  const indexes = (values.index ?? []).map((v) => {
    if (!/^\d+$/.test(v)) throw new DaemonError('ERR_USAGE', `--index ${JSON.stringify(v)} is not a whole number`);
    return Number(v);
  });
  const limit = values.limit === undefined ? LIST_LIMIT : Number(values.limit);
  if (!Number.isInteger(limit) || limit < 1) throw new DaemonError('ERR_USAGE', `--limit ${JSON.stringify(values.limit)} is not a positive whole number`);
  const filter: DeadFilter = {
    ...(values.all ? { all: true } : {}),
    indexes,
    ...(values.since === undefined ? {} : { since: isoTime('since', values.since) }),
    ...(values.before === undefined ? {} : { before: isoTime('before', values.before) }),
  };
  if (sub !== 'list' && sub !== 'replay' && sub !== 'purge') throw new DaemonError('ERR_USAGE', `unknown dead command ${JSON.stringify(sub)}; use list, replay or purge`);
  if (sub !== 'list' && !values.all && indexes.length === 0 && values.since === undefined && values.before === undefined) {
    throw new DaemonError('ERR_USAGE', `dead ${sub} needs --all, --index N, or a time (--since / --before)`);
  }
  const config = loadConfig({ env: process.env });
  const { ctx, close } = await cliStore(config);
  try {
    const list = await listDeadLetters(ctx, sub === 'list' ? limit : ALL_LETTERS);
    if (sub === 'list') {
      if (values.json) return print(JSON.stringify(list.map(({ raw: _raw, ...d }) => d)));
      if (list.length === 0) return print('no dead letters');
      const many = config.redis.partitions > 1;
      return print(
        list
          .map((d) => `${String(d.index).padStart(4)}  ${many ? `p${d.partition}  ` : ''}${d.at.padEnd(24)}  ${d.kind.padEnd(8)}  ${d.reason}`)
          .join('\n'),
      );
    }
    const chosen = selectDeadLetters(list, filter);
    if (sub === 'purge') return print(`purged ${await purgeDeadLetters(ctx, chosen)} dead letters`);
    const r = await replayDeadLetters(ctx, intakeLimits(config), chosen);
    for (const d of r.skipped) process.stderr.write(`not replayable: #${d.index} ${d.kind} (${d.truncated ? 'entry was cut when stored' : 'unreadable'})\n`);
    return print(`replayed ${r.replayed} dead letters${r.gone ? ` (${r.gone} already taken by another process)` : ''}`);
  } finally {
    close();
  }
}

