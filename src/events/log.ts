import type { Logger } from 'pino';
import type { WatchEvent } from './event.ts';

/** One line per event, the whole envelope under `event`, so log pipelines can alert on it. */
export function logEvent(log: Logger, event: WatchEvent): void {
  const level = event.type === 'run.completed' ? 'info' : 'warn';
  log[level]({ event }, `${event.type} ${event.data.run_id}`);
}
