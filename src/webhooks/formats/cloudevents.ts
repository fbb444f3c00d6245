import { fitEvent, type Format } from '../format.ts';

/**
 * CloudEvents 1.0 in structured mode (`application/cloudevents+json`): `id` is the event id
 * (receivers dedupe on it as on webhook-id), `source` the target's (default
 * `urn:letta-run-watcher`), `type` reverse-DNS from the event type (`run.failed` becomes
 * `com.letta.run-watcher.run.failed`), `subject` the run (or the endpoint, for operator
 * events), `time` the detection, `data` the envelope's data.
 */
export default {
  render(event, target, o) {
    const fitted = fitEvent(event, o.maxBodyBytes);
    const subject = 'run_id' in fitted.data ? fitted.data.run_id : fitted.data.target;
    const body = {
      specversion: '1.0',
      id: fitted.id,
      source: target.source,
      type: `com.letta.run-watcher.${fitted.type}`,
      subject,
      time: fitted.timestamp,
      datacontenttype: 'application/json',
      data: fitted.data,
    };
    return [{ url: target.url, contentType: 'application/cloudevents+json', body: JSON.stringify(body) }];
  },
} satisfies Format;
