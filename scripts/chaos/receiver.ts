import { startReceiver, type Receiver } from '../../test/kit/receiver.ts';
import { seeded } from '../../tools/simulator/prng.ts';
import type { ChaosOptions } from './options.ts';

/** The webhook receiver's two targets: event format, and Letta's callback format. */
export const TARGETS = ['/events', '/letta'];

/** The receiver, and how many first attempts it failed on purpose so far. */
export interface FlakyReceiver {
  rx: Receiver;
  targets: string[];
  failedOnPurpose(): number;
}

/**
 * A webhook receiver that fails a share (`receiverFailRate`) of first attempts per target and
 * webhook-id with 500 or 503, drawn from its own seeded PRNG; everything else gets 200.
 */
export async function startFlakyReceiver(secret: string, o: ChaosOptions): Promise<FlakyReceiver> {
  const rxRandom = seeded(o.seed ^ 0xbeef);
  let failedOnPurpose = 0;
  const tried = new Set<string>();
  const rx = await startReceiver({
    secrets: [secret],
    respond: (req) => {
      const first = !tried.has(`${req.path} ${req.id}`);
      tried.add(`${req.path} ${req.id}`);
      if (first && rxRandom() < o.receiverFailRate) {
        failedOnPurpose++;
        return { status: rxRandom() < 0.5 ? 500 : 503, body: 'chaos' };
      }
      return { status: 200, body: 'ok' };
    },
  });
  return { rx, targets: TARGETS, failedOnPurpose: () => failedOnPurpose };
}
