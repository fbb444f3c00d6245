import { MockAgent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../src/config.ts';
import type { DaemonDeps } from '../src/daemon.ts';
import { listDeadLetters } from '../src/dead-letters.ts';
import type { WatchEvent } from '../src/events/event.ts';
import type { Simulator } from '../tools/simulator/server.ts';
import { hostAllowed, isPrivateAddress, makeUrlGuard, type Resolver } from '../src/webhooks/url-guard.ts';
import { enqueue, keys, readEvents, startDaemon, storeFor, testEnv, waitFor, waitForEvents, useSuite } from './kit/harness.ts';
import { newSecret, startReceiver, type Receiver } from './kit/receiver.ts';

/**
 * The per-run webhook URL guard. Unit level: an injected resolver and a dispatcher that records
 * and refuses every request, so nothing here can reach the network; every refusal must say why.
 * Through the daemon: a refused per-run URL ends in P:dead without a connection while the run's
 * event is still committed. Nothing in this file sends a packet beyond 127.0.0.1: every host a
 * broken guard could connect to resolves to a trap receiver on loopback.
 */

const PUBLIC_V4 = '93.184.216.34';
const PUBLIC_V6 = '2606:2800:220:1:248:1893:25c8:1946';

/** A dispatcher that fails every request and remembers it (no interceptors, no net connect). */
function trapDispatcher(): MockAgent {
  const agent = new MockAgent({ enableCallHistory: true });
  agent.disableNetConnect();
  return agent;
}

function trapCalls(agent: MockAgent): string[] {
  return (agent.getCallHistory()?.calls() ?? []).map((c) => `${c.method} ${c.fullUrl}`);
}

/** A resolver over a fixed table; records every lookup. Unknown names fail like NXDOMAIN. */
function tableResolver(table: Record<string, readonly string[]>): Resolver & { lookups: string[] } {
  const lookups: string[] = [];
  const resolve = async (host: string) => {
    lookups.push(host);
    const addresses = table[host.toLowerCase().replace(/\.$/, '')];
    if (addresses === undefined) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  };
  return Object.assign(resolve, { lookups });
}

const DNS: Record<string, readonly string[]> = {
  localhost: ['127.0.0.1'],
  'loop6.example.com': ['::1'],
  'ten.example.com': ['10.0.0.7'],
  'oneseventwo.example.com': ['172.20.1.1'],
  'oneninetwo.example.com': ['192.168.0.5'],
  'linklocal.example.com': ['169.254.10.20'],
  'metadata.example.com': ['169.254.169.254'],
  'mapped.example.com': ['::ffff:10.0.0.1'],
  'mapped-loop.example.com': ['::ffff:127.0.0.1'],
  'ula.example.com': ['fd12:3456::1'],
  'linklocal6.example.com': ['fe80::1'],
  'mixed.example.com': [PUBLIC_V4, '10.0.0.1'],
  'mixed6.example.com': [PUBLIC_V6, 'fc00::5'],
  'empty.example.com': [],
  'hooks.example.com': [PUBLIC_V4],
  'a.example.com': [PUBLIC_V4],
  'a.b.example.com': [PUBLIC_V4],
  'v6.example.com': [PUBLIC_V6],
  'example.com': [PUBLIC_V4],
  'evilexample.com': [PUBLIC_V4],
  'example.com.evil.net': [PUBLIC_V4],
  'evil.example': [PUBLIC_V4],
  'allowed.example': [PUBLIC_V4],
};

/** [url, allowed hosts, expected reason] for addresses refused unless allowPrivateAddresses. */
const PRIVATE_CASES: readonly (readonly [string, readonly string[], RegExp])[] = [
  // loopback
  ['http://127.0.0.1/hook', ['127.0.0.1'], /127\.0\.0\.1 is a private or reserved address/],
  ['http://127.9.8.7:8080/', ['127.9.8.7'], /127\.9\.8\.7 is a private or reserved address/],
  ['http://[::1]/hook', ['::1'], /::1 is a private or reserved address/],
  ['http://localhost:8080/hook', ['localhost'], /localhost resolves to 127\.0\.0\.1, a private or reserved address/],
  ['https://loop6.example.com/', ['*.example.com'], /resolves to ::1/],
  // loopback in disguise: decimal and hex forms are normalized by the URL parser
  ['http://2130706433/', ['127.0.0.1'], /127\.0\.0\.1 is a private/],
  ['http://0x7f.0.0.1/', ['127.0.0.1'], /127\.0\.0\.1 is a private/],
  ['http://0.0.0.0/', ['0.0.0.0'], /0\.0\.0\.0 is a private/],
  // RFC 1918
  ['http://10.1.2.3/', ['10.1.2.3'], /10\.1\.2\.3 is a private/],
  ['http://172.16.0.1/', ['172.16.0.1'], /172\.16\.0\.1 is a private/],
  ['http://172.31.255.254/', ['172.31.255.254'], /172\.31\.255\.254 is a private/],
  ['http://192.168.1.10/', ['192.168.1.10'], /192\.168\.1\.10 is a private/],
  ['https://ten.example.com/x', ['*.example.com'], /ten\.example\.com resolves to 10\.0\.0\.7/],
  ['https://oneseventwo.example.com/x', ['*.example.com'], /resolves to 172\.20\.1\.1/],
  ['https://oneninetwo.example.com/x', ['*.example.com'], /resolves to 192\.168\.0\.5/],
  ['https://ula.example.com/x', ['*.example.com'], /resolves to fd12:3456::1/],
  // link-local and cloud metadata
  ['http://169.254.1.1/', ['169.254.1.1'], /169\.254\.1\.1 is a private/],
  ['http://[fe80::1]/', ['fe80::1'], /fe80::1 is a private/],
  ['https://linklocal.example.com/', ['*.example.com'], /resolves to 169\.254\.10\.20/],
  ['https://linklocal6.example.com/', ['*.example.com'], /resolves to fe80::1/],
  ['http://169.254.169.254/latest/meta-data/', ['169.254.169.254'], /169\.254\.169\.254 is a private/],
  ['http://metadata.example.com/computeMetadata/v1/', ['metadata.example.com'], /resolves to 169\.254\.169\.254/],
  // IPv4-mapped IPv6 hides a private v4 address
  ['http://[::ffff:10.0.0.1]/', ['::ffff:a00:1'], /::ffff:a00:1 is a private/],
  ['http://[::ffff:127.0.0.1]/', ['::ffff:7f00:1'], /::ffff:7f00:1 is a private/],
  ['https://mapped.example.com/', ['*.example.com'], /resolves to ::ffff:10\.0\.0\.1/],
  ['https://mapped-loop.example.com/', ['*.example.com'], /resolves to ::ffff:127\.0\.0\.1/],
  // one private address among public ones is enough to refuse
  ['https://mixed.example.com/', ['mixed.example.com'], /mixed\.example\.com resolves to 10\.0\.0\.1/],
  ['https://mixed6.example.com/', ['mixed6.example.com'], /resolves to fc00::5/],
];

/** Refused whatever allowPrivateAddresses says. */
const ALWAYS_REFUSED: readonly (readonly [string, readonly string[], RegExp])[] = [
  // userinfo tricks: the host is what follows the @
  ['http://allowed.example@evil.example/', ['allowed.example'], /credentials/],
  ['http://allowed.example:x@evil.example/', ['allowed.example', 'evil.example'], /credentials/],
  ['https://user:secret@allowed.example/', ['allowed.example'], /credentials/],
  // not http(s)
  ['ftp://allowed.example/x', ['allowed.example'], /scheme ftp: is not http\(s\)/],
  ['file:///etc/passwd', ['allowed.example', ''], /scheme file: is not http\(s\)/],
  ['gopher://allowed.example/', ['allowed.example'], /scheme gopher: is not http\(s\)/],
  ['ws://allowed.example/', ['allowed.example'], /scheme ws: is not http\(s\)/],
  ['javascript:alert(1)', ['allowed.example'], /scheme javascript: is not http\(s\)/],
  ['data:text/plain,hi', ['allowed.example'], /scheme data: is not http\(s\)/],
  ['not a url', ['allowed.example'], /not a valid URL/],
  // hosts not on the allow-list
  ['https://evil.example/', ['allowed.example'], /host evil\.example is not in WATCHER_WEBHOOK_ALLOWED_HOSTS/],
  ['https://allowed.example.evil.example/', ['allowed.example'], /not in WATCHER_WEBHOOK_ALLOWED_HOSTS/],
  ['https://hooks.example.com/', [], /host hooks\.example\.com is not in WATCHER_WEBHOOK_ALLOWED_HOSTS/],
  ['http://127.0.0.1/', ['localhost'], /host 127\.0\.0\.1 is not in WATCHER_WEBHOOK_ALLOWED_HOSTS/],
  // wildcards match subdomains only
  ['https://example.com/', ['*.example.com'], /host example\.com is not in/],
  ['https://evilexample.com/', ['*.example.com'], /host evilexample\.com is not in/],
  ['https://example.com.evil.net/', ['*.example.com'], /host example\.com\.evil\.net is not in/],
  // DNS failures
  ['https://empty.example.com/', ['*.example.com'], /empty\.example\.com has no addresses/],
  ['https://nxdomain.example.com/', ['*.example.com'], /ENOTFOUND nxdomain\.example\.com/],
];

const ALLOWED: readonly (readonly [string, readonly string[]])[] = [
  ['https://hooks.example.com/x', ['hooks.example.com']],
  ['http://hooks.example.com:8443/x?y=1', ['HOOKS.example.com']],
  ['https://a.example.com/', ['*.example.com']],
  ['https://a.b.example.com/', ['*.example.com']],
  ['https://A.Example.COM./', ['*.example.com']],
  ['https://v6.example.com/', ['*.example.com']],
  [`http://${PUBLIC_V4}/hook`, [PUBLIC_V4]],
  [`http://[${PUBLIC_V6}]/hook`, [PUBLIC_V6]],
];

describe('makeUrlGuard (injected resolver, a dispatcher that refuses everything)', () => {
  const trap = trapDispatcher();
  afterAll(async () => {
    await trap.close();
  });

  it('the trap dispatcher really records and refuses a request', async () => {
    const probe = trapDispatcher();
    await expect(request('http://127.0.0.1:9/probe', { dispatcher: probe })).rejects.toThrow();
    expect(trapCalls(probe)).toEqual(['GET http://127.0.0.1:9/probe']);
    await probe.close();
  });

  it.each(PRIVATE_CASES)('refuses %s (allowed hosts %j): %s', async (url, allowedHosts, reason) => {
    const resolve = tableResolver(DNS);
    const guard = makeUrlGuard({ allowedHosts, allowPrivateAddresses: false, resolve, dispatcher: trap });
    const verdict = await guard.check(url);
    expect(verdict).toEqual({ ok: false, reason: expect.stringMatching(reason) });
    expect(guard.dispatcher).toBe(trap);
    await guard.close();
  });

  it.each(PRIVATE_CASES)('allows %s when allowPrivateAddresses is true', async (url, allowedHosts) => {
    const guard = makeUrlGuard({ allowedHosts, allowPrivateAddresses: true, resolve: tableResolver(DNS), dispatcher: trap });
    expect(await guard.check(url)).toEqual({ ok: true });
  });

  it.each(ALWAYS_REFUSED)('refuses %s (allowed hosts %j), even with private addresses allowed: %s', async (url, allowedHosts, reason) => {
    for (const allowPrivateAddresses of [false, true]) {
      const resolve = tableResolver(DNS);
      const guard = makeUrlGuard({ allowedHosts, allowPrivateAddresses, resolve, dispatcher: trap });
      expect(await guard.check(url)).toEqual({ ok: false, reason: expect.stringMatching(reason) });
      // A URL refused before DNS (scheme, credentials, allow-list) is never even resolved.
      if (!/has no addresses|ENOTFOUND/.test(reason.source)) expect(resolve.lookups).toEqual([]);
    }
  });

  it.each(ALLOWED)('allows %s (allowed hosts %j): public address, allowed host', async (url, allowedHosts) => {
    const guard = makeUrlGuard({ allowedHosts, allowPrivateAddresses: false, resolve: tableResolver(DNS), dispatcher: trap });
    expect(await guard.check(url)).toEqual({ ok: true });
  });

  it('checking never touches the dispatcher', () => {
    expect(trapCalls(trap)).toEqual([]);
  });

  it('isPrivateAddress: the reserved ranges, and public addresses', () => {
    const privateOnes = [
      '127.0.0.1', '127.255.255.255', '10.0.0.0', '10.255.255.255', '172.16.0.0', '172.31.255.255', '192.168.0.1',
      '169.254.0.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '224.0.0.1', '255.255.255.255',
      '::1', '::', 'fc00::1', 'fd00::1', 'fe80::1', 'ff02::1', '::ffff:10.0.0.1', '::ffff:127.0.0.1', '::ffff:169.254.169.254',
      '::ffff:a00:1', 'not-an-ip',
    ];
    const publicOnes = ['93.184.216.34', '8.8.8.8', '172.15.255.255', '172.32.0.0', '192.167.255.255', '169.253.255.255', '11.0.0.1', PUBLIC_V6, '::ffff:93.184.216.34'];
    expect(privateOnes.filter((a) => !isPrivateAddress(a))).toEqual([]);
    expect(publicOnes.filter((a) => isPrivateAddress(a))).toEqual([]);
  });

  it('isPrivateAddress: IPv4-compatible IPv6 (::a.b.c.d) hides a v4 address too, as url-guard.ts says', async () => {
    const compatible = ['::10.0.0.1', '::a00:1', '::127.0.0.1', '::7f00:1', '::169.254.169.254'];
    expect(compatible.filter((a) => !isPrivateAddress(a))).toEqual([]);
    const guard = makeUrlGuard({ allowedHosts: ['compat.example.com'], allowPrivateAddresses: false, resolve: tableResolver({ 'compat.example.com': ['::a00:1'] }), dispatcher: trap });
    expect(await guard.check('https://compat.example.com/')).toEqual({ ok: false, reason: expect.stringMatching(/resolves to ::a00:1/) });
  });

  it('hostAllowed: exact names, case and trailing dot, *. wildcards for subdomains only', () => {
    const list = ['hooks.example.org', '*.example.com'];
    const yes = ['hooks.example.org', 'HOOKS.Example.ORG', 'hooks.example.org.', 'a.example.com', 'a.b.example.com', 'x.example.com.'];
    const no = ['example.com', 'evilexample.com', 'example.com.evil.net', 'a.example.com.evil.net', 'hooks.example.org.evil.net', 'xhooks.example.org', 'example.org', ''];
    expect(yes.filter((h) => !hostAllowed(h, list))).toEqual([]);
    expect(no.filter((h) => hostAllowed(h, list))).toEqual([]);
    expect(hostAllowed('anything.example', [])).toBe(false);
  });
});

describe("the guard's own dispatcher re-checks addresses when it connects (DNS rebinding)", () => {
  let trapRx: Receiver;
  beforeAll(async () => {
    trapRx = await startReceiver({ secrets: [] });
  });
  afterAll(async () => {
    await trapRx.close();
  });

  it('a name that passed the check but resolves to a private address at connect time is refused without a connection', async () => {
    // First answer (the check): public. Later answers (the connection): loopback, the trap.
    let calls = 0;
    const resolve: Resolver = async () => (++calls === 1 ? [{ address: PUBLIC_V4, family: 4 }] : [{ address: '127.0.0.1', family: 4 }]);
    const guard = makeUrlGuard({ allowedHosts: ['localhost'], allowPrivateAddresses: false, resolve });
    const url = `http://localhost:${trapRx.port}/rebound`;
    expect(await guard.check(url)).toEqual({ ok: true });
    const before = trapRx.connections;
    await expect(request(url, { method: 'POST', body: '{}', dispatcher: guard.dispatcher })).rejects.toThrow(/private or reserved/);
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(trapRx.connections).toBe(before);
    expect(trapRx.requests).toHaveLength(0);
    await guard.close();
  });

  it('control: with private addresses allowed, the same dispatcher connects through the injected resolver', async () => {
    const resolve = tableResolver({ localhost: ['127.0.0.1'] });
    const guard = makeUrlGuard({ allowedHosts: ['localhost'], allowPrivateAddresses: true, resolve });
    const res = await request(`http://localhost:${trapRx.port}/allowed`, { method: 'POST', body: '{}', dispatcher: guard.dispatcher });
    await res.body.text();
    expect(res.statusCode).toBe(200);
    expect(resolve.lookups).toContain('localhost');
    expect(trapRx.on('/allowed')).toHaveLength(1);
    await guard.close();
  });
});

describe('the guard through the daemon', () => {
  const { redis, cleanup, simulator, receiver } = useSuite();

  async function setup(webhooks: Record<string, unknown>, deps: Partial<Omit<DaemonDeps, 'config' | 'log'>>) {
    const secret = newSecret();
    const sim: Simulator = await simulator();
    const file = JSON.stringify({ webhooks: { scheduleMs: [0, 50, 100], ...webhooks } });
    const config: Config = loadConfig({
      env: testEnv({ LETTA_BASE_URL: sim.url, WATCHER_WEBHOOK_SECRET: secret, WATCHER_CONFIG: 'guard.json', WATCHER_SHUTDOWN_GRACE_MS: '500' }),
      readFile: () => file,
    });
    await startDaemon(cleanup, config, deps);
    return { sim, secret, prefix: config.redis.keyPrefix };
  }

  const trapReceiver = (secrets: string[] = []): Promise<Receiver> => receiver({ secrets });

  it('a per-run webhook_url whose host resolves to 10.0.0.5 is dead-lettered with a reason, never connected; the event is still committed', async () => {
    const trapRx = await trapReceiver();
    const webhookDispatcher = trapDispatcher();
    cleanup.add(() => webhookDispatcher.close());
    // The check sees 10.0.0.5; should anything ask again and connect anyway, it reaches the trap on loopback.
    const lookups: string[] = [];
    const resolve: Resolver = async (host) => {
      lookups.push(host);
      return [{ address: lookups.length === 1 ? '10.0.0.5' : '127.0.0.1', family: 4 }];
    };
    const { sim, prefix } = await setup({ allowedHosts: ['localhost'] }, { resolve, webhookDispatcher });
    const run = sim.createRun({ durationMs: 0, outcome: 'completed' });
    const hook = `http://localhost:${trapRx.port}/hook`;
    await enqueue(redis, prefix, [JSON.stringify({ run_id: run.id, webhook_url: hook, metadata: { who: 'test' } })]);

    const [event] = await waitForEvents(redis, prefix, 1);
    expect(event?.event.data.run_id).toBe(run.id);
    const k = keys(prefix);
    await waitFor(async () => (await redis.llen(k.dead)) === 1 && (await redis.zcard(k.webhooks)) === 0);
    const [dead] = await listDeadLetters(storeFor(redis, prefix));
    expect(dead?.kind).toBe('delivery');
    expect(dead?.reason).toMatch(/^refused: localhost resolves to 10\.0\.0\.5, a private or reserved address$/);
    const entry = dead?.entry as { target: string; event: WatchEvent };
    expect(entry.target).toBe(`u:${hook}`);
    expect(entry.event).toEqual(event?.event);
    expect(lookups).toEqual(['localhost']);
    expect(trapRx.connections).toBe(0);
    expect(trapCalls(webhookDispatcher)).toEqual([]);
    expect(await readEvents(redis, prefix)).toHaveLength(1);
  });

  it('a per-run URL naming a host off the allow-list is dead-lettered without a DNS lookup or a connection', async () => {
    const trapRx = await trapReceiver();
    const webhookDispatcher = trapDispatcher();
    cleanup.add(() => webhookDispatcher.close());
    const resolve = tableResolver({ localhost: ['127.0.0.1'] });
    const { sim, prefix } = await setup({ allowedHosts: ['hooks.example.com'], allowPrivateAddresses: true }, { resolve, webhookDispatcher });
    const run = sim.createRun({ durationMs: 0, outcome: 'failed' });
    await enqueue(redis, prefix, [JSON.stringify({ run_id: run.id, callback_url: `http://localhost:${trapRx.port}/cb` })]);

    await waitForEvents(redis, prefix, 1);
    const k = keys(prefix);
    await waitFor(async () => (await redis.llen(k.dead)) === 1 && (await redis.zcard(k.webhooks)) === 0);
    const [dead] = await listDeadLetters(storeFor(redis, prefix));
    expect(dead?.reason).toBe('refused: host localhost is not in WATCHER_WEBHOOK_ALLOWED_HOSTS');
    expect((dead?.entry as { target: string }).target).toBe(`l:http://localhost:${trapRx.port}/cb`);
    expect(resolve.lookups).toEqual([]);
    expect(trapRx.connections).toBe(0);
    expect(trapCalls(webhookDispatcher)).toEqual([]);
  });

  it('configured targets are the operator\'s, not subject to the per-run guard: one named by a host with a private address is delivered', async () => {
    const secret = newSecret();
    const rx = await trapReceiver([secret]);
    // Production wiring: no webhookDispatcher. `localhost` is 127.0.0.1 in /etc/hosts and in the injected resolver.
    const resolve = tableResolver({ localhost: ['127.0.0.1'] });
    const sim: Simulator = await simulator();
    const file = JSON.stringify({ webhooks: { scheduleMs: [0, 50, 100], targets: [{ url: `http://localhost:${rx.port}/hook`, name: 'ops' }] } });
    const config = loadConfig({
      env: testEnv({ LETTA_BASE_URL: sim.url, WATCHER_WEBHOOK_SECRET: secret, WATCHER_CONFIG: 'guard.json', WATCHER_SHUTDOWN_GRACE_MS: '500' }),
      readFile: () => file,
    });
    expect(config.webhooks.allowPrivateAddresses).toBe(false);
    await startDaemon(cleanup, config, { resolve });
    const prefix = config.redis.keyPrefix;
    const run = sim.createRun({ durationMs: 0, outcome: 'completed' });
    await enqueue(redis, prefix, [run.id]);

    const [event] = await waitForEvents(redis, prefix, 1);
    const k = keys(prefix);
    await waitFor(async () => (await redis.zcard(k.webhooks)) === 0, {
      timeoutMs: 10_000,
      describe: async () => `outbox ${await redis.zcard(k.webhooks)}, dead ${JSON.stringify((await listDeadLetters(storeFor(redis, prefix))).map((d) => d.reason))}`,
    });
    const dead = await listDeadLetters(storeFor(redis, prefix));
    expect(dead.map((d) => ({ reason: d.reason, last: (d.entry as { last_response?: unknown }).last_response }))).toEqual([]);
    expect(rx.deliveredIds('/hook')).toEqual(new Set([event?.event.id]));
    expect(rx.requests.every((r) => r.verified)).toBe(true);
  });
});
