import { isRunEvent } from '../../events/event.ts';
import { runSeconds, summaryOf, type Format } from '../format.ts';

/**
 * A Slack incoming-webhook message: `text` always set (what notifications and clients without
 * blocks show), and Block Kit `blocks` with the run, agent, status, stop reason and duration.
 * Slack caps a section's text at 3000 characters and a field's at 2000; ours are far shorter.
 */
export default {
  render(event, target) {
    // The summary holds what the API said (status, stop reason): escaped, it cannot @-mention.
    const text = escape(summaryOf(event));
    const blocks: unknown[] = [{ type: 'section', text: { type: 'mrkdwn', text: `*${text}*` } }];
    if (isRunEvent(event)) {
      const d = event.data;
      const secs = runSeconds(event);
      const field = (label: string, value: string) => ({ type: 'mrkdwn', text: `*${label}*\n${value}` });
      blocks.push({
        type: 'section',
        fields: [
          field('Run', `\`${escape(d.run_id)}\``),
          field('Agent', d.agent_id ? `\`${escape(d.agent_id)}\`` : 'unknown'),
          field('Status', escape(d.status ?? 'unknown')),
          field('Stop reason', escape(d.stop_reason ?? 'none')),
          field('Duration', secs === undefined ? 'unknown' : `${secs.toFixed(1)} s`),
          field('Event', event.type),
        ],
      });
      blocks.push({ type: 'context', elements: [{ type: 'mrkdwn', text: `${event.id} · detected ${d.watch.detected_at} · ${d.watch.polls} polls` }] });
    }
    return [{ url: target.url, contentType: 'application/json', body: JSON.stringify({ text, blocks }) }];
  },
} satisfies Format;

/** Slack's mrkdwn control characters (its "Escaping text" rules): &, < and >. */
function escape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
