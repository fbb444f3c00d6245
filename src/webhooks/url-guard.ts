import { lookup } from 'node:dns/promises';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { Agent, type Dispatcher } from 'undici';

/**
 * Per-run webhook URLs come from whoever can push to the intake list, so they are not
 * trusted: only http(s), only hosts on WATCHER_WEBHOOK_ALLOWED_HOSTS, and never an address in
 * a loopback, private, link-local or cloud-metadata range unless the operator allows it. The
 * addresses are checked again when the socket connects (the dispatcher's lookup), so a DNS
 * answer that changes between the check and the request (rebinding) is refused too.
 */
export type Resolver = (host: string) => Promise<{ address: string; family: number }[]>;

export type GuardVerdict = { ok: true } | { ok: false; reason: string };

export interface UrlGuard {
  check(url: string): Promise<GuardVerdict>;
  /** The dispatcher to send per-run webhooks through; its connections re-check addresses. */
  readonly dispatcher: Dispatcher;
  close(): Promise<void>;
}

const blocked = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16],
  ['172.16.0.0', 12], ['192.0.0.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15],
  ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) blocked.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [
  // ::/96 holds ::, ::1 and the deprecated IPv4-compatible forms (::10.0.0.1 = ::a00:1).
  ['::', 96], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8], ['64:ff9b::', 96], ['2001:db8::', 32],
] as const) blocked.addSubnet(net, prefix, 'ipv6');

/** True for addresses a webhook must not reach by default (metadata 169.254.169.254 included). */
export function isPrivateAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return blocked.check(address, 'ipv4');
  if (family !== 6) return true;
  // IPv4-mapped addresses (::ffff:10.0.0.1) hide a v4 address; judge that one.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1]) return blocked.check(mapped[1], 'ipv4');
  if (/^::ffff:/i.test(address)) return true;
  return blocked.check(address, 'ipv6');
}

export function hostAllowed(host: string, allowed: readonly string[]): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  return allowed.some((pattern) => {
    const p = pattern.toLowerCase().replace(/\.$/, '');
    return p.startsWith('*.') ? h.endsWith(p.slice(1)) && h.length > p.length - 1 : h === p;
  });
}

const systemResolver: Resolver = async (host) => await lookup(host, { all: true, verbatim: true });

export function makeUrlGuard(options: {
  allowedHosts: readonly string[];
  allowPrivateAddresses: boolean;
  resolve?: Resolver;
  dispatcher?: Dispatcher;
}): UrlGuard {
  const resolve = options.resolve ?? systemResolver;

  async function vetted(host: string): Promise<{ address: string; family: number }[]> {
    const addresses = await resolve(host);
    if (addresses.length === 0) throw Object.assign(new Error(`${host} has no addresses`), { code: 'ENOTFOUND' });
    if (!options.allowPrivateAddresses) {
      const bad = addresses.find((a) => isPrivateAddress(a.address));
      if (bad) throw Object.assign(new Error(`${host} resolves to ${bad.address}, a private or reserved address`), { code: 'ERR_WEBHOOK_BLOCKED' });
    }
    return addresses;
  }

  const guardedLookup = ((hostname: string, lookupOptions: { all?: boolean }, callback: (...args: unknown[]) => void) => {
    vetted(hostname).then(
      (addresses) => {
        if (lookupOptions.all) callback(null, addresses);
        else callback(null, addresses[0]?.address, addresses[0]?.family);
      },
      (err: unknown) => callback(err),
    );
  }) as unknown as LookupFunction;

  const dispatcher = options.dispatcher ?? new Agent({ connect: { lookup: guardedLookup }, keepAliveTimeout: 10_000 });

  return {
    dispatcher,
    async check(raw) {
      let url: URL;
      try {
        url = new URL(raw);
      } catch {
        return { ok: false, reason: 'not a valid URL' };
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') return { ok: false, reason: `scheme ${url.protocol} is not http(s)` };
      if (url.username || url.password) return { ok: false, reason: 'URLs with credentials are refused' };
      const host = url.hostname.replace(/^\[|\]$/g, '');
      if (!hostAllowed(host, options.allowedHosts)) {
        return { ok: false, reason: `host ${host} is not in WATCHER_WEBHOOK_ALLOWED_HOSTS` };
      }
      if (isIP(host)) {
        return !options.allowPrivateAddresses && isPrivateAddress(host)
          ? { ok: false, reason: `${host} is a private or reserved address` }
          : { ok: true };
      }
      try {
        await vetted(host);
        return { ok: true };
      } catch (err) {
        return { ok: false, reason: (err as Error).message };
      }
    },
    async close() {
      if (!options.dispatcher) await dispatcher.close();
    },
  };
}
