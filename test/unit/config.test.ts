import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { ENV_VARS, loadConfig } from '../../src/config.ts';
import type { Env } from '../../src/config.ts';
import { isDaemonError } from '../../src/errors.ts';

const defaults = JSON.parse(readFileSync(new URL('../../config/default.json', import.meta.url), 'utf8')) as Record<string, unknown>;

/** readFile that serves only the given files and fails loudly on any other path. */
function files(map: Record<string, string>): (path: string) => string {
  return (path) => {
    const text = map[path];
    if (text === undefined) throw new Error(`unexpected read of ${path}`);
    return text;
  };
}

/** The ERR_CONFIG message loadConfig throws for this input (fails the test if it does not throw). */
function configError(env: Env, readFile?: (path: string) => string): string {
  try {
    loadConfig(readFile ? { env, readFile } : { env });
  } catch (err) {
    expect(isDaemonError(err, 'ERR_CONFIG')).toBe(true);
    return (err as Error).message;
  }
  throw new Error('expected loadConfig to throw');
}

describe('loadConfig defaults', () => {
  it('loads config/default.json with no environment', () => {
    const c = loadConfig({ env: {} });
    const { secrets, ...rest } = c;
    expect(rest).toEqual(defaults);
    expect(secrets).toEqual({ webhookSecrets: [], routingKeys: {} });
    expect(c.letta.baseUrl).toBe('https://api.letta.com');
    expect(c.redis.url).toBe('redis://127.0.0.1:6379');
    expect(c.redis.keyPrefix).toBe('letta-watch');
  });

  it('returns a deeply frozen config', () => {
    const c = loadConfig({ env: {} });
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.poll)).toBe(true);
    expect(Object.isFrozen(c.webhooks.scheduleMs)).toBe(true);
    expect(Object.isFrozen(c.secrets)).toBe(true);
    expect(() => {
      (c.poll as { concurrency: number }).concurrency = 1;
    }).toThrow(TypeError);
    expect(() => (c.webhooks.urls as string[]).push('https://x.test')).toThrow(TypeError);
  });

  it('does not let one load change the next', () => {
    loadConfig({ env: { WATCHER_CONCURRENCY: '7' } });
    expect(loadConfig({ env: {} }).poll.concurrency).toBe(32);
  });

  it('ignores empty and blank variables', () => {
    const c = loadConfig({ env: { WATCHER_CONCURRENCY: '', LETTA_API_KEY: '  ', WATCHER_WEBHOOK_URLS: '' } });
    expect(c.poll.concurrency).toBe(32);
    expect(c.secrets.lettaApiKey).toBeUndefined();
    expect(c.webhooks.urls).toEqual([]);
  });
});

describe('loadConfig environment', () => {
  it('reads numbers, trimming spaces', () => {
    const c = loadConfig({
      env: { WATCHER_CONCURRENCY: ' 64 ', WATCHER_POLL_FACTOR: '1.5', WATCHER_POLL_JITTER: '0', WATCHER_HTTP_PORT: '0', WATCHER_MAX_RPS: '12.5' },
    });
    expect(c.poll.concurrency).toBe(64);
    expect(c.poll.factor).toBe(1.5);
    expect(c.poll.jitter).toBe(0);
    expect(c.http.port).toBe(0);
    expect(c.poll.maxRps).toBe(12.5);
  });

  it('reads strings', () => {
    const c = loadConfig({
      env: { LETTA_BASE_URL: 'http://letta:8283', REDIS_URL: 'rediss://:pw@redis:6380/2', WATCHER_KEY_PREFIX: '{letta-watch}', WATCHER_LOG_LEVEL: 'debug' },
    });
    expect(c.letta.baseUrl).toBe('http://letta:8283');
    expect(c.redis.url).toBe('rediss://:pw@redis:6380/2');
    expect(c.redis.keyPrefix).toBe('{letta-watch}');
    expect(c.log.level).toBe('debug');
  });

  it('splits comma lists, trimming and dropping empty items', () => {
    const c = loadConfig({ env: { WATCHER_WEBHOOK_URLS: 'https://a.test/hook, http://b.test:8080/x ,,', WATCHER_WEBHOOK_ALLOWED_HOSTS: 'a.test,b.test' } });
    expect(c.webhooks.urls).toEqual(['https://a.test/hook', 'http://b.test:8080/x']);
    expect(c.webhooks.allowedHosts).toEqual(['a.test', 'b.test']);
  });

  it('splits webhook secrets on any whitespace, for rotation', () => {
    const c = loadConfig({ env: { WATCHER_WEBHOOK_SECRET: ' whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw==  whsec_b2xkc2VjcmV0\nwhsec_dGhpcmQ= ' } });
    expect(c.secrets.webhookSecrets).toEqual(['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw==', 'whsec_b2xkc2VjcmV0', 'whsec_dGhpcmQ=']);
  });

  it('takes the Letta API key from LETTA_API_KEY', () => {
    expect(loadConfig({ env: { LETTA_API_KEY: 'sk-let-abc' } }).secrets.lettaApiKey).toBe('sk-let-abc');
  });
});

describe('loadConfig WATCHER_CONFIG file', () => {
  it('overrides defaults key by key, keeping the rest of each section', () => {
    const c = loadConfig({
      env: { WATCHER_CONFIG: '/etc/watcher.json' },
      readFile: files({ '/etc/watcher.json': JSON.stringify({ poll: { concurrency: 5, initialMs: 500 }, webhooks: { urls: ['https://file.test/h'] } }) }),
    });
    expect(c.poll.concurrency).toBe(5);
    expect(c.poll.initialMs).toBe(500);
    expect(c.poll.maxMs).toBe(30_000);
    expect(c.webhooks.urls).toEqual(['https://file.test/h']);
    expect(c.webhooks.concurrency).toBe(16);
  });

  it('is overridden by the environment', () => {
    const c = loadConfig({
      env: { WATCHER_CONFIG: '/etc/watcher.json', WATCHER_CONCURRENCY: '7', WATCHER_WEBHOOK_URLS: 'https://env.test/h' },
      readFile: files({ '/etc/watcher.json': JSON.stringify({ poll: { concurrency: 5, initialMs: 500 }, webhooks: { urls: ['https://file.test/h'] } }) }),
    });
    expect(c.poll.concurrency).toBe(7);
    expect(c.poll.initialMs).toBe(500);
    expect(c.webhooks.urls).toEqual(['https://env.test/h']);
  });

  it('applies defaults inside webhook targets', () => {
    const c = loadConfig({
      env: { WATCHER_CONFIG: '/w.json' },
      readFile: files({ '/w.json': JSON.stringify({ webhooks: { targets: [{ url: 'https://t.test/h', name: 'ops' }] } }) }),
    });
    expect(c.webhooks.targets).toEqual([
      { url: 'https://t.test/h', name: 'ops', format: 'event', headers: {}, labels: {}, resolveAfterMs: 3_600_000, repeatMs: 300_000, source: 'urn:letta-run-watcher' },
    ]);
  });

  it('refuses a secrets key in the file', () => {
    const msg = configError(
      { WATCHER_CONFIG: '/w.json' },
      files({ '/w.json': JSON.stringify({ secrets: { lettaApiKey: 'sk-let-in-a-file' } }) }),
    );
    expect(msg).toMatch(/secrets/);
    expect(msg).toContain('/w.json');
    expect(msg).not.toContain('sk-let-in-a-file');
  });

  it('reports an unknown key in the file', () => {
    const msg = configError({ WATCHER_CONFIG: '/w.json' }, files({ '/w.json': JSON.stringify({ poll: { concurency: 5 }, pol: {} }) }));
    expect(msg).toContain('concurency');
    expect(msg).toContain('pol');
  });

  it('names the file and the key for a bad value from the file', () => {
    const msg = configError({ WATCHER_CONFIG: '/w.json' }, files({ '/w.json': JSON.stringify({ poll: { concurrency: 0 } }) }));
    expect(msg).toContain('/w.json');
    expect(msg).toContain('poll.concurrency');
  });

  it('reports a file that is not JSON, or not an object', () => {
    expect(configError({ WATCHER_CONFIG: '/w.json' }, files({ '/w.json': '{ nope' }))).toContain('/w.json');
    expect(configError({ WATCHER_CONFIG: '/w.json' }, files({ '/w.json': '[1, 2]' }))).toContain('/w.json');
  });
});

describe('webhook targets: formats, routing, routing keys', () => {
  const file = (targets: unknown[]) => files({ '/w.json': JSON.stringify({ webhooks: { targets } }) });

  it('takes each format with its options, and a PagerDuty routing key only from the environment variable named', () => {
    const c = loadConfig({
      env: { WATCHER_CONFIG: '/w.json', PD_KEY: ' R0UT1NGK3Y ' },
      readFile: file([
        { url: 'https://am.test', name: 'am', format: 'alertmanager', labels: { team: 'ml' }, resolveAfterMs: 600_000 },
        { url: 'https://pd.test/v2/enqueue', name: 'pd', format: 'pagerduty', routingKeyEnv: 'PD_KEY', types: ['run.failed'] },
        { url: 'https://hooks.slack.test/x', name: 'approvals', format: 'slack', types: ['run.completed'], stopReasons: ['requires_approval'] },
        { url: 'https://ce.test', name: 'ce', format: 'cloudevents', source: '/watchers/eu', types: ['run.*', 'endpoint.*', 'delivery.dead'] },
      ]),
    });
    expect(c.webhooks.targets.map((t) => t.format)).toEqual(['alertmanager', 'pagerduty', 'slack', 'cloudevents']);
    expect(c.webhooks.targets[0]).toMatchObject({ labels: { team: 'ml' }, resolveAfterMs: 600_000 });
    expect(c.webhooks.targets[0]?.types).toBeUndefined();
    expect(c.webhooks.targets[2]?.stopReasons).toEqual(['requires_approval']);
    expect(c.secrets.routingKeys).toEqual({ PD_KEY: 'R0UT1NGK3Y' });
    expect(JSON.stringify(c.webhooks)).not.toContain('R0UT1NGK3Y');
  });

  it('refuses two targets with one name, and an unnamed target on a URL already in WATCHER_WEBHOOK_URLS (one would silently replace the other)', () => {
    const msg = configError(
      { WATCHER_CONFIG: '/w.json', WATCHER_WEBHOOK_URLS: 'https://same.test/h' },
      file([
        { url: 'https://a.test', name: 'ops' },
        { url: 'https://b.test', name: 'ops', format: 'slack' },
        { url: 'https://same.test/h', format: 'slack' },
        { url: 'https://same.test/h', name: 'slack-too', format: 'slack' },
      ]),
    );
    expect(msg).toMatch(/webhooks\.targets\.1\.name: "ops" is already the name of webhooks\.targets\.0; target names must be unique/);
    expect(msg).toMatch(/webhooks\.targets\.2: the same URL as WATCHER_WEBHOOK_URLS\[0\]; give one of them a name/);
    // A named target may share a URL with another: it has its own name.
    expect(msg).not.toMatch(/webhooks\.targets\.3/);
  });

  it("lowercases a target's header names, so the daemon's own content-type, user-agent and webhook-* replace them whatever their case", () => {
    const c = loadConfig({
      env: { WATCHER_CONFIG: '/w.json' },
      readFile: file([{ url: 'https://a.test', name: 'a', headers: { 'Webhook-Signature': 'forged', 'X-Team': 'ml' } }]),
    });
    expect(c.webhooks.targets[0]?.headers).toEqual({ 'webhook-signature': 'forged', 'x-team': 'ml' });
  });

  it('names each bad target setting: an unknown format, event type or stop reason, a label name, a missing routing key', () => {
    const msg = configError(
      { WATCHER_CONFIG: '/w.json' },
      file([
        { url: 'https://a.test', format: 'teams' },
        { url: 'https://b.test', types: ['run.finished'] },
        { url: 'https://c.test', stopReasons: ['requires_aproval'] },
        { url: 'https://d.test', format: 'alertmanager', labels: { 'bad-label': 'x' } },
        { url: 'https://e.test', format: 'pagerduty' },
        { url: 'https://f.test', format: 'pagerduty', routingKeyEnv: 'NOT_SET_ANYWHERE' },
      ]),
    );
    expect(msg).toMatch(/webhooks\.targets\.0\.format: must be one of alertmanager, cloudevents, event, letta, pagerduty, slack \(got "teams"\)/);
    expect(msg).toMatch(/webhooks\.targets\.1\.types\.0: must be an event type .*\(got "run\.finished"\)/);
    expect(msg).toMatch(/webhooks\.targets\.2\.stopReasons\.0: must be one of Letta's stop reasons .*\(got "requires_aproval"\)/);
    expect(msg).toMatch(/webhooks\.targets\.3\.labels\.bad-label: .*Prometheus label name/);
    expect(msg).toMatch(/webhooks\.targets\.4\.routingKeyEnv: a pagerduty target needs/);
    expect(msg).toMatch(/webhooks\.targets\.5\.routingKeyEnv: environment variable NOT_SET_ANYWHERE is not set/);
  });

  it('reads WATCHER_STALLED_AFTER_MS (0 turns stall reports off)', () => {
    expect(loadConfig({ env: {} }).poll.stalledAfterMs).toBe(3_600_000);
    expect(loadConfig({ env: { WATCHER_STALLED_AFTER_MS: '0' } }).poll.stalledAfterMs).toBe(0);
    expect(configError({ WATCHER_STALLED_AFTER_MS: '-5' })).toContain('WATCHER_STALLED_AFTER_MS');
  });
});

describe('loadConfig errors', () => {
  it('names every bad key in one ERR_CONFIG error, by environment variable', () => {
    const msg = configError({
      WATCHER_CONCURRENCY: 'lots',
      WATCHER_POLL_JITTER: '2',
      LETTA_BASE_URL: 'ftp://letta.test',
      WATCHER_LOG_LEVEL: 'chatty',
      WATCHER_HTTP_PORT: '70000',
      WATCHER_WEBHOOK_URLS: 'https://ok.test,not a url',
    });
    for (const name of ['WATCHER_CONCURRENCY', 'WATCHER_POLL_JITTER', 'LETTA_BASE_URL', 'WATCHER_LOG_LEVEL', 'WATCHER_HTTP_PORT', 'WATCHER_WEBHOOK_URLS']) {
      expect(msg).toContain(name);
    }
    // Named as the user wrote it, not by the internal config path.
    expect(msg).not.toContain('poll.concurrency');
    expect(msg).not.toContain('letta.baseUrl');
  });

  it('reports a poll maximum below the initial interval', () => {
    const msg = configError({ WATCHER_POLL_INITIAL_MS: '5000', WATCHER_POLL_MAX_MS: '1000' });
    expect(msg).toContain('WATCHER_POLL_MAX_MS');
  });

  it('never shows a bad WATCHER_WEBHOOK_SECRET value', () => {
    const msg = configError({ WATCHER_WEBHOOK_SECRET: 'whsec_dGhpcmQ= hunter2-not-a-whsec' });
    expect(msg).toContain('WATCHER_WEBHOOK_SECRET');
    expect(msg).not.toContain('hunter2');
    expect(msg).not.toContain('whsec_dGhpcmQ=');
  });

  it('never shows LETTA_API_KEY when reporting other problems', () => {
    const msg = configError({ LETTA_API_KEY: 'sk-let-very-secret', WATCHER_CONCURRENCY: 'x', LETTA_BASE_URL: 'nope' });
    expect(msg).not.toContain('sk-let-very-secret');
    expect(msg).not.toContain('very-secret');
  });

  it('masks the password of a bad REDIS_URL', () => {
    const msg = configError({ REDIS_URL: 'http://:hunter2@redis.test:6379' });
    expect(msg).toContain('REDIS_URL');
    expect(msg).toContain('redis.test');
    expect(msg).not.toContain('hunter2');
  });

  it('masks user and password of a bad REDIS_URL', () => {
    const msg = configError({ REDIS_URL: 'redis//default:hunter2@redis.test:6379' });
    expect(msg).toContain('REDIS_URL');
    expect(msg).not.toContain('hunter2');
  });

  it('masks all of a bad REDIS_URL password that contains an unencoded "@"', () => {
    // Node's URL parser accepts this (the last "@" ends the userinfo), so users do write it.
    const msg = configError({ REDIS_URL: 'http://:s3cr@t-pass@redis.test:6379' });
    expect(msg).toContain('REDIS_URL');
    expect(msg).not.toContain('s3cr');
    expect(msg).not.toContain('t-pass');
  });
});

describe('Redis deployments', () => {
  it('reads Cluster seeds, Sentinel nodes, partitions and credentials from the environment', () => {
    const c = loadConfig({
      env: { REDIS_CLUSTER_NODES: '10.0.0.1:7000, rediss://u:p%40ss@10.0.0.2:7001', WATCHER_PARTITIONS: '6', REDIS_PASSWORD: 'pw-1', REDIS_TLS: 'true' },
    });
    expect(c.redis.clusterNodes).toEqual(['10.0.0.1:7000', 'rediss://u:p%40ss@10.0.0.2:7001']);
    expect(c.redis.partitions).toBe(6);
    expect(c.redis.tls).toBe(true);
    expect(c.secrets.redisPassword).toBe('pw-1');
    const s = loadConfig({ env: { REDIS_SENTINELS: 's1:26379,[::1]:26380', REDIS_SENTINEL_MASTER: 'mymaster', REDIS_SENTINEL_PASSWORD: 'spw' } });
    expect(s.redis.sentinels).toEqual(['s1:26379', '[::1]:26380']);
    expect(s.secrets.redisSentinelPassword).toBe('spw');
  });

  it('names each bad setting: seeds, one deployment only, the master name, hash tags and partitions', () => {
    expect(configError({ REDIS_CLUSTER_NODES: 'nohost,10.0.0.1:99999' })).toMatch(/REDIS_CLUSTER_NODES\[0\]: must be host:port[\s\S]*REDIS_CLUSTER_NODES\[1\]: must be host:port/);
    expect(configError({ REDIS_URL: 'redis://r:6379', REDIS_SENTINELS: 's:26379', REDIS_SENTINEL_MASTER: 'm' })).toContain('REDIS_URL, REDIS_SENTINELS: set only one of them');
    expect(configError({ REDIS_SENTINELS: 's:26379' })).toContain('REDIS_SENTINEL_MASTER: the master group name is needed');
    expect(configError({ REDIS_CLUSTER_NODES: 'a:7000' })).toContain('WATCHER_KEY_PREFIX: on Redis Cluster with one partition the prefix needs a hash tag');
    expect(loadConfig({ env: { REDIS_CLUSTER_NODES: 'a:7000', WATCHER_KEY_PREFIX: '{lw}' } }).redis.keyPrefix).toBe('{lw}');
    expect(configError({ WATCHER_PARTITIONS: '4', WATCHER_KEY_PREFIX: '{lw}' })).toContain('WATCHER_KEY_PREFIX: with WATCHER_PARTITIONS > 1 each partition carries its own hash tag');
    expect(configError({ WATCHER_PARTITIONS: '0' })).toContain('WATCHER_PARTITIONS');
    expect(configError({ REDIS_TLS: 'maybe' })).toContain('REDIS_TLS');
  });

  it('never echoes a password, however it is spelt, in any URL setting', () => {
    const shapes = ['Ab/Cd', 'Ab?Cd', 'Ab#Cd', 'Ab@Cd', 'p:a:s', 'sp ace', 'pct%zz', 'ümlaut', 'A/B?C#D@E'];
    for (const pw of shapes) {
      for (const [name, value] of [
        ['REDIS_URL', `redis://user:${pw}@127.0.0.1:6379`],
        ['REDIS_URL', `redis://:${pw}@[::1`],
        ['LETTA_BASE_URL', `http://user:${pw}@letta.test:99999`],
        ['WATCHER_WEBHOOK_URLS', `https://ok.test/h,ftp://user:${pw}@hooks.test/x`],
        ['REDIS_CLUSTER_NODES', `redis://user:${pw}@@:0`],
      ] as const) {
        let message = '';
        try {
          loadConfig({ env: { [name]: value, WATCHER_CONCURRENCY: 'x' } });
        } catch (err) {
          message = (err as Error).message;
        }
        expect(message, `${name} with ${pw}`).toContain('WATCHER_CONCURRENCY');
        expect(message, `${name} with ${pw}`).not.toContain(pw);
      }
    }
  });
});

describe('the documented variables', () => {
  // Every variable the loader reads, plus the two read outside it: a user looking in README or
  // docs/configuration.md finds each one (this fails when one is added without its docs).
  const names = [...ENV_VARS.map(([name]) => name), 'WATCHER_CONFIG', 'LETTA_WATCHER_NODE_FLAGS'];
  for (const doc of ['README.md', 'docs/configuration.md']) {
    it(`${doc} names every environment variable the daemon reads`, () => {
      const text = readFileSync(new URL(`../../${doc}`, import.meta.url), 'utf8');
      expect(names.filter((name) => !text.includes(`\`${name}\``))).toEqual([]);
    });
  }
});
