import { fitEvent, type Format } from '../format.ts';

/** The envelope itself (docs/events.md), cut to the body cap with `data.truncated` saying what went. */
export default {
  render: (event, target, o) => [{ url: target.url, contentType: 'application/json', body: JSON.stringify(fitEvent(event, o.maxBodyBytes)) }],
} satisfies Format;
