import { runBodyAt, runStatusAt, type CallbackRecord, type RunStatus, type SimRun } from './runs.ts';

/**
 * Letta's `GET /v1/runs/` as far as the watcher uses it: `active=true` means created or
 * running and applies only when `statuses` is absent; `statuses` repeats the key; `limit`
 * 1..1000 (422 outside, as FastAPI validates); newest first by default (`order=desc`, by
 * created_at then id). The list reads the database, which lags what a retrieve overlays: a run
 * shows its status of `lagMs` ago there. Cursors (`before`, `after`) are not served: the
 * watcher reads one page.
 */
export interface ListQuery {
  statuses: RunStatus[] | undefined;
  active: boolean;
  limit: number;
  order: 'asc' | 'desc';
}

const STATUSES: readonly RunStatus[] = ['created', 'running', 'completed', 'failed', 'cancelled'];

/** FastAPI's 422 body for one bad query parameter. */
function validationError(loc: string, msg: string, input: string): string {
  return JSON.stringify({ detail: [{ type: 'value_error', loc: ['query', loc], msg, input }] });
}

export function parseListQuery(search: URLSearchParams): ListQuery | { error: string } {
  const rawLimit = search.get('limit') ?? '100';
  const limit = /^-?\d+$/.test(rawLimit) ? Number(rawLimit) : Number.NaN;
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) return { error: validationError('limit', 'Input should be between 1 and 1000', rawLimit) };
  const order = search.get('order') ?? 'desc';
  if (order !== 'asc' && order !== 'desc') return { error: validationError('order', "Input should be 'asc' or 'desc'", order) };
  const rawActive = (search.get('active') ?? 'false').toLowerCase();
  if (!['true', 'false', '1', '0'].includes(rawActive)) return { error: validationError('active', 'Input should be a valid boolean', rawActive) };
  const statuses = search.getAll('statuses');
  return {
    statuses: statuses.length === 0 ? undefined : (statuses.filter((s) => (STATUSES as readonly string[]).includes(s)) as RunStatus[]),
    active: rawActive === 'true' || rawActive === '1',
    limit,
    order,
  };
}

/** The page of runs `q` asks for, as the database saw them at `now - lagMs`. */
export function listPage(
  runs: Iterable<{ run: SimRun; callback?: CallbackRecord | undefined }>,
  q: ListQuery,
  now: number,
  lagMs: number,
): ReturnType<typeof runBodyAt>[] {
  const asOf = (run: SimRun) => Math.max(run.createdAt, now - lagMs);
  const wanted = (run: SimRun): boolean => {
    const status = runStatusAt(run, asOf(run));
    if (q.statuses !== undefined) return q.statuses.includes(status);
    return !q.active || status === 'created' || status === 'running';
  };
  const picked = [...runs].filter((e) => e.run.createdAt <= now && wanted(e.run));
  picked.sort((a, b) => a.run.createdAt - b.run.createdAt || (a.run.id < b.run.id ? -1 : a.run.id > b.run.id ? 1 : 0));
  if (q.order === 'desc') picked.reverse();
  return picked.slice(0, q.limit).map((e) => runBodyAt(e.run, asOf(e.run), false, e.callback));
}
