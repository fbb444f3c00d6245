import { isRunEvent, lettaCallbackBody } from '../../events/event.ts';
import type { Format } from '../format.ts';

/**
 * Exactly the body Letta's own callback POSTs, `{"run_id","status","completed_at","metadata"}`,
 * so receivers built for it work unchanged. Letta calls back once, when the run ends: nothing
 * is sent for run.stalled or operator events. The shape has no room for a note: an oversized
 * body loses its metadata.
 */
export default {
  render(event, target, o) {
    if (!isRunEvent(event) || event.type === 'run.stalled') return [];
    const body = lettaCallbackBody(event);
    let text = JSON.stringify(body);
    if (Buffer.byteLength(text) > o.maxBodyBytes) text = JSON.stringify({ ...body, metadata: null });
    return [{ url: target.url, contentType: 'application/json', body: text }];
  },
} satisfies Format;
