/**
 * URLs as they may be printed: without userinfo. The parsed URL decides where the userinfo
 * is; a URL that does not parse (a password with "/", "?" or "#" not percent-encoded) has
 * everything between "//" and its last "@" masked, since nothing else can tell where the
 * password ends.
 */
export function redactUrl(raw: string): string {
  try {
    const url = new URL(raw);
    if (url.username !== '' || url.password !== '') {
      url.username = '';
      url.password = '';
      return url.href.replace('//', '//***@');
    }
    // A URL can parse and still hide a password: "redis://user/pass@host" reads as a path.
    if (!raw.includes('@')) return url.href === raw || url.href === `${raw}/` ? raw : url.href;
  } catch {
    // fall through
  }
  const start = raw.indexOf('//');
  const at = raw.lastIndexOf('@');
  if (start >= 0 && at > start) return `${raw.slice(0, start + 2)}***@${raw.slice(at + 1)}`;
  if (at >= 0) return `***@${raw.slice(at + 1)}`;
  return raw;
}
