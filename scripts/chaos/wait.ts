import { setTimeout as sleep } from 'node:timers/promises';

/** Sleeps until the clock reads `when` (Date.now() ms); returns at once when that has passed. */
export async function until(when: number): Promise<void> {
  const ms = when - Date.now();
  if (ms > 0) await sleep(ms);
}
