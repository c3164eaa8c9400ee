/** IPv4 prefixes as integers: what the tables need to validate addresses against the cluster's ranges. */

export interface V4Cidr {
  /** Network address (host bits cleared), as an unsigned 32-bit integer. */
  net: number;
  len: number;
  /** Canonical text, "10.1.2.0/24". */
  text: string;
}

export function ipv4ToInt(ip: string): number | undefined {
  // Hand-parsed (this runs for every row of a full pass): four decimal octets, no leading zeros.
  let n = 0;
  let part = 0;
  let digits = 0;
  let parts = 0;
  for (let i = 0; i <= ip.length; i++) {
    const c = i < ip.length ? ip.charCodeAt(i) : 46;
    if (c === 46) {
      if (digits === 0 || part > 255) return undefined;
      n = n * 256 + part;
      parts++;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return undefined;
      part = part * 10 + (c - 48);
      if (++digits > 3) return undefined;
    } else return undefined;
  }
  return parts === 4 ? n >>> 0 : undefined;
}

export function intToIpv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

function mask(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

/** Parses "a.b.c.d/len" (host bits are cleared); undefined when it is not an IPv4 CIDR. */
export function parseV4Cidr(text: string): V4Cidr | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) return undefined;
  const addr = ipv4ToInt(text.slice(0, slash));
  const lenText = text.slice(slash + 1);
  if (addr === undefined || !/^\d{1,2}$/.test(lenText)) return undefined;
  const len = Number(lenText);
  if (len > 32) return undefined;
  const net = (addr & mask(len)) >>> 0;
  return { net, len, text: `${intToIpv4(net)}/${len}` };
}

export function cidrContains(c: V4Cidr, ip: number): boolean {
  return ((ip & mask(c.len)) >>> 0) === c.net;
}

/** True when one prefix contains the other (aligned prefixes overlap only that way). */
export function cidrsOverlap(a: V4Cidr, b: V4Cidr): boolean {
  const len = Math.min(a.len, b.len);
  return ((a.net & mask(len)) >>> 0) === ((b.net & mask(len)) >>> 0);
}

/** The prefix of length `len` that contains `c` (len <= c.len). */
export function ancestor(c: V4Cidr, len: number): string {
  return `${intToIpv4((c.net & mask(len)) >>> 0)}/${len}`;
}
