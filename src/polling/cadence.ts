/**
 * Poll cadence: the first poll happens at intake, then the gap after the n-th poll is
 * initial × factor^(n-1), capped at max, with ± jitter so runs enqueued together spread out.
 */
export interface CadenceOptions {
  initialMs: number;
  maxMs: number;
  factor: number;
  jitter: number;
}

export function nextPollDelay(pollsDone: number, o: CadenceOptions, random: () => number = Math.random): number {
  const exponent = Math.max(0, pollsDone - 1);
  const base = Math.min(o.maxMs, o.initialMs * o.factor ** exponent);
  const jittered = base * (1 + o.jitter * (2 * random() - 1));
  return Math.max(1, Math.round(Math.min(o.maxMs, jittered)));
}
