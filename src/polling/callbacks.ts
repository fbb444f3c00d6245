import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Metrics } from '../ops/metrics.ts';
import { RUN_ID_PATTERN } from '../letta/run-id.ts';

/**
 * Letta's callback as a hint (POST /callbacks/letta?token=...). Producers point a run's
 * `callback_url` here; Letta POSTs `{"run_id","status","completed_at","metadata"}` once when the
 * run ends. Letta cannot send headers, so the token rides in the URL; it is compared in
 * constant time, and a wrong one is refused (401) before anything touches Redis. The body is
 * never trusted for the event: a hint only makes a watched run due now, and its poll decides,
 * so a forged callback costs at most one API call. Hints are rate-limited; a run that is not
 * watched is ignored (202 all the same, so the answer tells a caller nothing).
 */
export interface CallbackReceiver {
  handle(req: IncomingMessage, res: ServerResponse, search: URLSearchParams): void;
}

const MAX_BODY_BYTES = 64 * 1024;

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export function makeCallbackReceiver(options: {
  token: string;
  ratePerSecond: number;
  /** Makes the run due now if it is watched; true when it is. */
  hint: (runId: string) => Promise<boolean>;
  metrics: Metrics;
  now?: () => number;
}): CallbackReceiver {
  const expected = digest(options.token);
  const now = options.now ?? (() => performance.now());
  let tokens = options.ratePerSecond;
  let at = now();

  function allow(): boolean {
    const t = now();
    tokens = Math.min(options.ratePerSecond, tokens + ((t - at) * options.ratePerSecond) / 1000);
    at = t;
    if (tokens < 1) return false;
    tokens -= 1;
    return true;
  }

  function reply(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
    res.end(body);
  }

  return {
    handle(req, res, search) {
      const given = search.get('token') ?? '';
      // Hashing both sides gives equal lengths, so timingSafeEqual says nothing of the token's.
      if (!timingSafeEqual(digest(given), expected)) {
        options.metrics.callbackHints.inc({ result: 'unauthorized' });
        req.resume();
        return reply(res, 401, '{"detail":"unauthorized"}');
      }
      if (!allow()) {
        options.metrics.callbackHints.inc({ result: 'rate_limited' });
        req.resume();
        return reply(res, 429, '{"detail":"too many callbacks"}', { 'retry-after': '1' });
      }
      const chunks: Buffer[] = [];
      let size = 0;
      let refused = false;
      req.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BODY_BYTES && !refused) {
          refused = true;
          options.metrics.callbackHints.inc({ result: 'bad_request' });
          reply(res, 413, '{"detail":"body too large"}');
          req.destroy();
        } else if (!refused) chunks.push(chunk);
      });
      req.on('end', () => {
        if (refused) return;
        let runId: unknown;
        try {
          runId = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { run_id?: unknown } | null)?.run_id;
        } catch {
          runId = undefined;
        }
        if (typeof runId !== 'string' || !RUN_ID_PATTERN.test(runId)) {
          options.metrics.callbackHints.inc({ result: 'bad_request' });
          return reply(res, 400, '{"detail":"run_id is missing or not a run ID"}');
        }
        options.hint(runId).then(
          (watched) => {
            options.metrics.callbackHints.inc({ result: watched ? 'accepted' : 'unknown' });
            reply(res, 202, '{"accepted":true}');
          },
          () => {
            options.metrics.callbackHints.inc({ result: 'error' });
            // Letta does not retry; polling finds the run anyway.
            reply(res, 503, '{"detail":"cannot reach Redis; the run is still watched"}');
          },
        );
      });
      req.on('error', () => {});
    },
  };
}
