import type { Config } from '../config.ts';
import { Daemon } from '../daemon.ts';
import { isDaemonError } from '../errors.ts';
import { makeLogger } from '../log.ts';
import { redactUrl } from '../redact.ts';
import { EXIT_FATAL, EXIT_OK } from './output.ts';

/**
 * `run`: the daemon until a signal. The first SIGTERM/SIGINT drains (a stop during start-up
 * ends it too); a second exits at once. `onSignals` installs the handler (main.ts holds
 * signals that arrive while modules load, and replays them here).
 */
export async function runDaemon(config: Config, onSignals: (handler: (signal: NodeJS.Signals) => void) => void): Promise<number> {
  const log = makeLogger(config.log.level, { pretty: process.stdout.isTTY === true });
  const daemon = new Daemon({ config, log });
  const started = daemon.start();
  let signals = 0;
  const done = new Promise<number>((resolve) => {
    onSignals((signal) => {
      signals++;
      if (signals > 1) {
        log.warn({ signal }, 'second signal: exiting without draining');
        process.exit(EXIT_FATAL);
      }
      log.info({ signal }, 'stopping: draining in-flight polls');
      // A stop during start-up ends it (the daemon starts nothing after a stop).
      daemon
        .stop()
        .then(
          () => resolve(EXIT_OK),
          (err: unknown) => {
            log.error({ err }, 'error while stopping');
            resolve(EXIT_FATAL);
          },
        );
    });
  });
  try {
    await started;
  } catch (err) {
    // Stopped while starting (waiting for Redis, say): a clean stop all the same.
    if (isDaemonError(err, 'ERR_STOPPED')) return await done;
    throw err;
  }
  log.info(
    {
      letta: redactUrl(config.letta.baseUrl),
      prefix: config.redis.keyPrefix,
      partitions: config.redis.partitions,
      concurrency: config.poll.concurrency,
      max_rps: config.poll.maxRps,
      webhook_targets: config.webhooks.urls.length + config.webhooks.targets.length,
    },
    'letta-run-watcher running',
  );
  const code = await done;
  log.flush();
  return code;
}

