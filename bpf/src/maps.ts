/**
 * The TypeScript side of bpf/include/sluice_maps.h: one codec per key/value struct, and one spec per map. This is
 * the only place the layouts are written down in TypeScript; bpf/test/btf.test.ts checks every `fields` list against
 * the BTF clang emits for the C structs, and the datapath tests check the programs read what these codecs write.
 */
import { fileURLToPath } from 'node:url';

/** Where `make -C bpf` puts the object. */
export const OBJECT_PATH = fileURLToPath(new URL('../build/sluice.bpf.o', import.meta.url));
/** The bpf/ folder (its Makefile builds OBJECT_PATH). */
export const BPF_DIR = fileURLToPath(new URL('..', import.meta.url));

export interface Field {
  name: string;
  offset: number;
  size: number;
}

export interface Codec<T> {
  /** The C struct (or scalar type) this codec mirrors, as named in BTF. */
  readonly cType: string;
  readonly size: number;
  /** The C struct's members, in order, with byte offsets and sizes. */
  readonly fields: readonly Field[];
  encode(value: T, buf: Buffer, offset: number): void;
  decode(buf: Buffer, offset: number): T;
}

export type MapType = 'hash' | 'lru_hash' | 'lpm_trie' | 'array' | 'percpu_array';

export interface MapSpec<K, V> {
  /** The map's name in the object and its pin file name (the kernel's own name for it keeps the first 15 chars). */
  readonly name: string;
  readonly type: MapType;
  readonly maxEntries: number;
  /** BPF_F_NO_PREALLOC: memory follows use (LPM tries require it; large, sparsely used hashes choose it). */
  readonly noPrealloc?: boolean;
  readonly key: Codec<K>;
  readonly value: Codec<V>;
}

export class CodecError extends Error {
  override name = 'CodecError';
}

// ---- scalars -------------------------------------------------------------------------------------------------

/** Dotted IPv4 → the 4 wire-order bytes at buf[offset..]. Throws CodecError on anything else. */
export function writeIpv4(ip: string, buf: Buffer, offset: number): void {
  let octet = 0;
  let digits = 0;
  let index = 0;
  for (let i = 0; i <= ip.length; i++) {
    const c = i < ip.length ? ip.charCodeAt(i) : 46;
    if (c === 46) {
      if (digits === 0 || index > 3 || octet > 255) throw new CodecError(`invalid IPv4 address ${JSON.stringify(ip)}`);
      buf[offset + index++] = octet;
      octet = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57 && digits < 3) {
      octet = octet * 10 + (c - 48);
      digits++;
    } else {
      throw new CodecError(`invalid IPv4 address ${JSON.stringify(ip)}`);
    }
  }
  if (index !== 4) throw new CodecError(`invalid IPv4 address ${JSON.stringify(ip)}`);
}

export function readIpv4(buf: Buffer, offset: number): string {
  return `${buf[offset]}.${buf[offset + 1]}.${buf[offset + 2]}.${buf[offset + 3]}`;
}

/** "aa:bb:cc:dd:ee:ff" → 6 bytes. */
export function writeMac(mac: string, buf: Buffer, offset: number): void {
  // Hand-rolled: this runs for every endpoint of a 100k-entry batch.
  if (mac.length !== 17) throw new CodecError(`invalid MAC address ${JSON.stringify(mac)}`);
  for (let i = 0; i < 6; i++) {
    const hi = hexDigit(mac.charCodeAt(i * 3));
    const lo = hexDigit(mac.charCodeAt(i * 3 + 1));
    if (hi < 0 || lo < 0 || (i < 5 && mac.charCodeAt(i * 3 + 2) !== 58)) throw new CodecError(`invalid MAC address ${JSON.stringify(mac)}`);
    buf[offset + i] = (hi << 4) | lo;
  }
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

export function readMac(buf: Buffer, offset: number): string {
  const parts: string[] = [];
  for (let i = 0; i < 6; i++) parts.push((buf[offset + i] ?? 0).toString(16).padStart(2, '0'));
  return parts.join(':');
}

function u32(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new CodecError(`${what} must be a u32, got ${value}`);
  return value;
}

export const u32Codec: Codec<number> = {
  cType: '__u32',
  size: 4,
  fields: [],
  encode: (v, buf, off) => void buf.writeUInt32LE(u32(v, 'key'), off),
  decode: (buf, off) => buf.readUInt32LE(off),
};

// ---- sl_endpoints --------------------------------------------------------------------------------------------

export interface EndpointKey {
  ip: string;
}
export const endpointKey: Codec<EndpointKey> = {
  cType: 'sl_endpoint_key',
  size: 4,
  fields: [{ name: 'ip', offset: 0, size: 4 }],
  encode: (v, buf, off) => writeIpv4(v.ip, buf, off),
  decode: (buf, off) => ({ ip: readIpv4(buf, off) }),
};

export const EP_F_HOST = 0x1;
export interface EndpointValue {
  /** Host-side veth ifindex, in the node's network namespace. */
  ifindex: number;
  flags: number;
  /** The pod's eth0 MAC. */
  mac: string;
  /** The host-side veth's MAC. */
  nodeMac: string;
}
export const endpointValue: Codec<EndpointValue> = {
  cType: 'sl_endpoint_value',
  size: 20,
  fields: [
    { name: 'ifindex', offset: 0, size: 4 },
    { name: 'flags', offset: 4, size: 4 },
    { name: 'mac', offset: 8, size: 6 },
    { name: 'node_mac', offset: 14, size: 6 },
  ],
  encode: (v, buf, off) => {
    buf.writeUInt32LE(u32(v.ifindex, 'ifindex'), off);
    buf.writeUInt32LE(u32(v.flags, 'flags'), off + 4);
    writeMac(v.mac, buf, off + 8);
    writeMac(v.nodeMac, buf, off + 14);
  },
  decode: (buf, off) => ({
    ifindex: buf.readUInt32LE(off),
    flags: buf.readUInt32LE(off + 4),
    mac: readMac(buf, off + 8),
    nodeMac: readMac(buf, off + 14),
  }),
};

// ---- LPM keys (sl_ipcache, sl_tunnel) ------------------------------------------------------------------------

/** "10.0.1.0/24" or a bare address (a /32). Host bits are cleared on encode, as the trie ignores them anyway. */
export interface LpmKey {
  cidr: string;
}
export const lpmKey: Codec<LpmKey> = {
  cType: 'sl_lpm_key',
  size: 8,
  fields: [
    { name: 'prefixlen', offset: 0, size: 4 },
    { name: 'ip', offset: 4, size: 4 },
  ],
  encode: (v, buf, off) => {
    const slash = v.cidr.indexOf('/');
    const ip = slash < 0 ? v.cidr : v.cidr.slice(0, slash);
    const len = slash < 0 ? 32 : Number(v.cidr.slice(slash + 1));
    if (!Number.isInteger(len) || len < 0 || len > 32 || (slash >= 0 && !/^\d{1,2}$/.test(v.cidr.slice(slash + 1)))) {
      throw new CodecError(`invalid IPv4 CIDR ${JSON.stringify(v.cidr)}`);
    }
    buf.writeUInt32LE(len, off);
    writeIpv4(ip, buf, off + 4);
    if (len < 32) {
      const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
      buf.writeUInt32BE((buf.readUInt32BE(off + 4) & mask) >>> 0, off + 4);
    }
  },
  decode: (buf, off) => ({ cidr: `${readIpv4(buf, off + 4)}/${buf.readUInt32LE(off)}` }),
};

// ---- sl_ipcache ----------------------------------------------------------------------------------------------

export const IPCACHE_F_LOCAL = 0x1;
export interface IpcacheValue {
  nodeIp: string;
  flags: number;
}
export const ipcacheValue: Codec<IpcacheValue> = {
  cType: 'sl_ipcache_value',
  size: 8,
  fields: [
    { name: 'node_ip', offset: 0, size: 4 },
    { name: 'flags', offset: 4, size: 4 },
  ],
  encode: (v, buf, off) => {
    writeIpv4(v.nodeIp, buf, off);
    buf.writeUInt32LE(u32(v.flags, 'flags'), off + 4);
  },
  decode: (buf, off) => ({ nodeIp: readIpv4(buf, off), flags: buf.readUInt32LE(off + 4) }),
};

/** "10.1.2.3/32" or "10.1.2.3" → "10.1.2.3"; anything shorter → undefined. */
export function hostAddress(cidr: string): string | undefined {
  const slash = cidr.indexOf('/');
  if (slash < 0) return cidr;
  return cidr.slice(slash + 1) === '32' ? cidr.slice(0, slash) : undefined;
}

// ---- sl_tunnel -----------------------------------------------------------------------------------------------

export interface TunnelValue {
  nodeIp: string;
  /** 0: the node's configured VNI. */
  vni: number;
}
export const tunnelValue: Codec<TunnelValue> = {
  cType: 'sl_tunnel_value',
  size: 8,
  fields: [
    { name: 'node_ip', offset: 0, size: 4 },
    { name: 'vni', offset: 4, size: 4 },
  ],
  encode: (v, buf, off) => {
    writeIpv4(v.nodeIp, buf, off);
    buf.writeUInt32LE(u32(v.vni, 'vni'), off + 4);
  },
  decode: (buf, off) => ({ nodeIp: readIpv4(buf, off), vni: buf.readUInt32LE(off + 4) }),
};

// ---- services (sl_services, sl_lb_maglev, sl_backends, sl_lb_fwd, sl_lb_ct, sl_lb_affinity[_sock,_match]) ---

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export type L4Proto = 'tcp' | 'udp';
const protoNumber = (p: L4Proto) => (p === 'tcp' ? IPPROTO_TCP : p === 'udp' ? IPPROTO_UDP : badProto(p));
function badProto(p: unknown): never {
  throw new CodecError(`protocol must be tcp or udp, got ${JSON.stringify(p)}`);
}
const protoName = (n: number): L4Proto => (n === IPPROTO_UDP ? 'udp' : 'tcp');

function port(value: number): number {
  if (!Number.isInteger(value) || value < 0 || value > 65535) throw new CodecError(`port must be 0..65535, got ${value}`);
  return value;
}
function u8(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 255) throw new CodecError(`${what} must be a u8, got ${value}`);
  return value;
}

/** Maglev lookup table size (prime): every service's table has this many backend ids. */
export const MAGLEV_M = 1009;
/** Source address a pod sees when it reaches itself through its own service. */
export const HAIRPIN_IP = '169.254.42.1';

export interface ServiceKey {
  /** The frontend address; '0.0.0.0' is a NodePort, on every address of the node. */
  vip: string;
  port: number;
  proto: L4Proto;
}
export const serviceKey: Codec<ServiceKey> = {
  cType: 'sl_service_key',
  size: 8,
  fields: [
    { name: 'vip', offset: 0, size: 4 },
    { name: 'port', offset: 4, size: 2 },
    { name: 'proto', offset: 6, size: 1 },
    { name: 'pad', offset: 7, size: 1 },
  ],
  encode: (v, buf, off) => {
    writeIpv4(v.vip, buf, off);
    buf.writeUInt16BE(port(v.port), off + 4);
    buf[off + 6] = protoNumber(v.proto);
    buf[off + 7] = 0;
  },
  decode: (buf, off) => ({ vip: readIpv4(buf, off), port: buf.readUInt16BE(off + 4), proto: protoName(buf[off + 6] ?? 0) }),
};

export const SVC_F_EXTERNAL = 0x1;
export const SVC_F_AFFINITY = 0x2;
export const SVC_F_DROP = 0x4;
/** The frontend's address is one of this node's (a NodePort on each node IP): the programs forward its replies. */
export const SVC_F_NODE_ADDR = 0x8;
export interface ServiceValue {
  /** The agent's id for the backend set: key of its Maglev table (and of its affinity entries). */
  id: number;
  /** Backends in the Maglev table; 0 rejects (or drops, with SVC_F_DROP). */
  count: number;
  /** SVC_F_*. */
  flags: number;
  /** sessionAffinity ClientIP timeout, seconds (0 without SVC_F_AFFINITY). */
  affinityTimeout: number;
}
export const serviceValue: Codec<ServiceValue> = {
  cType: 'sl_service_value',
  size: 12,
  fields: [
    { name: 'id', offset: 0, size: 4 },
    { name: 'count', offset: 4, size: 2 },
    { name: 'flags', offset: 6, size: 1 },
    { name: 'pad', offset: 7, size: 1 },
    { name: 'affinity_timeout', offset: 8, size: 4 },
  ],
  encode: (v, buf, off) => {
    buf.writeUInt32LE(u32(v.id, 'service id'), off);
    buf.writeUInt16LE(port(v.count), off + 4);
    buf[off + 6] = u8(v.flags, 'service flags');
    buf[off + 7] = 0;
    buf.writeUInt32LE(u32(v.affinityTimeout, 'affinity timeout'), off + 8);
  },
  decode: (buf, off) => ({ id: buf.readUInt32LE(off), count: buf.readUInt16LE(off + 4), flags: buf[off + 6] ?? 0, affinityTimeout: buf.readUInt32LE(off + 8) }),
};

/** A Maglev table: MAGLEV_M backend ids (sl_backends keys). */
export type MaglevTable = Uint32Array;
export const maglevValue: Codec<MaglevTable> = {
  cType: 'sl_maglev_value',
  size: MAGLEV_M * 4,
  fields: [{ name: 'backend_ids', offset: 0, size: MAGLEV_M * 4 }],
  encode: (v, buf, off) => {
    if (v.length !== MAGLEV_M) throw new CodecError(`a Maglev table has ${MAGLEV_M} slots, got ${v.length}`);
    // Little-endian host: the array's bytes are the C layout (copying beats 1,009 writeUInt32LE calls per table).
    Buffer.from(v.buffer, v.byteOffset, v.byteLength).copy(buf, off);
  },
  decode: (buf, off) => {
    // A copy (the dump's buffer is reused), in one memcpy; little-endian host as for encode.
    const out = new Uint32Array(MAGLEV_M);
    new Uint8Array(out.buffer).set(buf.subarray(off, off + MAGLEV_M * 4));
    return out;
  },
};

export interface BackendKey {
  id: number;
}
export const backendKey: Codec<BackendKey> = {
  cType: 'sl_backend_key',
  size: 4,
  fields: [{ name: 'id', offset: 0, size: 4 }],
  encode: (v, buf, off) => void buf.writeUInt32LE(u32(v.id, 'backend id'), off),
  decode: (buf, off) => ({ id: buf.readUInt32LE(off) }),
};

/** Every service holding the backend says terminating (informational: the programs do not read it). */
export const BE_F_TERMINATING = 0x1;
export const BE_F_LOCAL = 0x2;
export interface BackendValue {
  ip: string;
  port: number;
  /** BE_F_*. */
  flags: number;
}
export const backendValue: Codec<BackendValue> = {
  cType: 'sl_backend_value',
  size: 8,
  fields: [
    { name: 'ip', offset: 0, size: 4 },
    { name: 'port', offset: 4, size: 2 },
    { name: 'flags', offset: 6, size: 1 },
    { name: 'pad', offset: 7, size: 1 },
  ],
  encode: (v, buf, off) => {
    writeIpv4(v.ip, buf, off);
    buf.writeUInt16BE(port(v.port), off + 4);
    buf[off + 6] = u8(v.flags, 'backend flags');
    buf[off + 7] = 0;
  },
  decode: (buf, off) => ({ ip: readIpv4(buf, off), port: buf.readUInt16BE(off + 4), flags: buf[off + 6] ?? 0 }),
};

/** Connection-tracking key: forward (client, frontend), reverse (client as the backend sees it, backend). */
export interface LbTuple {
  clientIp: string;
  peerIp: string;
  clientPort: number;
  peerPort: number;
  proto: L4Proto;
}
export const lbTuple: Codec<LbTuple> = {
  cType: 'sl_lb_tuple',
  size: 16,
  fields: [
    { name: 'client_ip', offset: 0, size: 4 },
    { name: 'peer_ip', offset: 4, size: 4 },
    { name: 'client_port', offset: 8, size: 2 },
    { name: 'peer_port', offset: 10, size: 2 },
    { name: 'proto', offset: 12, size: 1 },
    { name: 'pad', offset: 13, size: 3 },
  ],
  encode: (v, buf, off) => {
    writeIpv4(v.clientIp, buf, off);
    writeIpv4(v.peerIp, buf, off + 4);
    buf.writeUInt16BE(port(v.clientPort), off + 8);
    buf.writeUInt16BE(port(v.peerPort), off + 10);
    buf[off + 12] = protoNumber(v.proto);
    buf.fill(0, off + 13, off + 16);
  },
  decode: (buf, off) => ({
    clientIp: readIpv4(buf, off),
    peerIp: readIpv4(buf, off + 4),
    clientPort: buf.readUInt16BE(off + 8),
    peerPort: buf.readUInt16BE(off + 10),
    proto: protoName(buf[off + 12] ?? 0),
  }),
};

export const CT_F_SNAT = 0x1;
export const CT_F_HAIRPIN = 0x2;
export const CT_F_CLOSING = 0x4;
export interface LbFwdValue {
  backendId: number;
  /** CLOCK_MONOTONIC seconds. */
  expires: number;
  serviceId: number;
  natPort: number;
  /** CT_F_*. */
  flags: number;
}
export const lbFwdValue: Codec<LbFwdValue> = {
  cType: 'sl_lb_fwd_value',
  size: 16,
  fields: [
    { name: 'backend_id', offset: 0, size: 4 },
    { name: 'expires', offset: 4, size: 4 },
    { name: 'service_id', offset: 8, size: 4 },
    { name: 'nat_port', offset: 12, size: 2 },
    { name: 'flags', offset: 14, size: 1 },
    { name: 'pad', offset: 15, size: 1 },
  ],
  encode: (v, buf, off) => {
    buf.writeUInt32LE(u32(v.backendId, 'backend id'), off);
    buf.writeUInt32LE(u32(v.expires, 'expires'), off + 4);
    buf.writeUInt32LE(u32(v.serviceId, 'service id'), off + 8);
    buf.writeUInt16BE(port(v.natPort), off + 12);
    buf[off + 14] = u8(v.flags, 'ct flags');
    buf[off + 15] = 0;
  },
  decode: (buf, off) => ({
    backendId: buf.readUInt32LE(off),
    expires: buf.readUInt32LE(off + 4),
    serviceId: buf.readUInt32LE(off + 8),
    natPort: buf.readUInt16BE(off + 12),
    flags: buf[off + 14] ?? 0,
  }),
};

export interface LbRevValue {
  vip: string;
  vport: number;
  /** '0.0.0.0' unless the forward direction was SNATed: then the real client. */
  clientIp: string;
  clientPort: number;
}
export const lbRevValue: Codec<LbRevValue> = {
  cType: 'sl_lb_rev_value',
  size: 12,
  fields: [
    { name: 'vip', offset: 0, size: 4 },
    { name: 'vport', offset: 4, size: 2 },
    { name: 'client_port', offset: 6, size: 2 },
    { name: 'client_ip', offset: 8, size: 4 },
  ],
  encode: (v, buf, off) => {
    writeIpv4(v.vip, buf, off);
    buf.writeUInt16BE(port(v.vport), off + 4);
    buf.writeUInt16BE(port(v.clientPort), off + 6);
    writeIpv4(v.clientIp, buf, off + 8);
  },
  decode: (buf, off) => ({ vip: readIpv4(buf, off), vport: buf.readUInt16BE(off + 4), clientPort: buf.readUInt16BE(off + 6), clientIp: readIpv4(buf, off + 8) }),
};

/** sl_lb_sock: (socket cookie, backend) → the frontend an unconnected UDP socket sent to. */
export interface SockKey {
  cookie: bigint;
  addr: string;
  port: number;
}
export const sockKey: Codec<SockKey> = {
  cType: 'sl_sock_key',
  size: 16,
  fields: [
    { name: 'cookie', offset: 0, size: 8 },
    { name: 'addr', offset: 8, size: 4 },
    { name: 'port', offset: 12, size: 2 },
    { name: 'pad', offset: 14, size: 2 },
  ],
  encode: (v, buf, off) => {
    buf.writeBigUInt64LE(v.cookie, off);
    writeIpv4(v.addr, buf, off + 8);
    buf.writeUInt16BE(port(v.port), off + 12);
    buf.writeUInt16LE(0, off + 14);
  },
  decode: (buf, off) => ({ cookie: buf.readBigUInt64LE(off), addr: readIpv4(buf, off + 8), port: buf.readUInt16BE(off + 12) }),
};

export interface SockValue {
  vip: string;
  vport: number;
}
export const sockValue: Codec<SockValue> = {
  cType: 'sl_sock_value',
  size: 8,
  fields: [
    { name: 'vip', offset: 0, size: 4 },
    { name: 'vport', offset: 4, size: 2 },
    { name: 'pad', offset: 6, size: 2 },
  ],
  encode: (v, buf, off) => {
    writeIpv4(v.vip, buf, off);
    buf.writeUInt16BE(port(v.vport), off + 4);
    buf.writeUInt16LE(0, off + 6);
  },
  decode: (buf, off) => ({ vip: readIpv4(buf, off), vport: buf.readUInt16BE(off + 4) }),
};

export interface AffinityKey {
  serviceId: number;
  clientIp: string;
}
export const affinityKey: Codec<AffinityKey> = {
  cType: 'sl_affinity_key',
  size: 8,
  fields: [
    { name: 'service_id', offset: 0, size: 4 },
    { name: 'client_ip', offset: 4, size: 4 },
  ],
  encode: (v, buf, off) => {
    buf.writeUInt32LE(u32(v.serviceId, 'service id'), off);
    writeIpv4(v.clientIp, buf, off + 4);
  },
  decode: (buf, off) => ({ serviceId: buf.readUInt32LE(off), clientIp: readIpv4(buf, off + 4) }),
};

export interface AffinityValue {
  backendId: number;
  lastUsed: number;
}
export const affinityValue: Codec<AffinityValue> = {
  cType: 'sl_affinity_value',
  size: 8,
  fields: [
    { name: 'backend_id', offset: 0, size: 4 },
    { name: 'last_used', offset: 4, size: 4 },
  ],
  encode: (v, buf, off) => {
    buf.writeUInt32LE(u32(v.backendId, 'backend id'), off);
    buf.writeUInt32LE(u32(v.lastUsed, 'last used'), off + 4);
  },
  decode: (buf, off) => ({ backendId: buf.readUInt32LE(off), lastUsed: buf.readUInt32LE(off + 4) }),
};

/**
 * sl_lb_affinity_sock: the socket LB's sessionAffinity ClientIP, whose client is the socket's network namespace
 * (bpf_get_netns_cookie; connect() has no source address yet). Value: affinityValue.
 */
export interface AffinitySockKey {
  netnsCookie: bigint;
  serviceId: number;
}
export const affinitySockKey: Codec<AffinitySockKey> = {
  cType: 'sl_affinity_sock_key',
  size: 16,
  fields: [
    { name: 'netns_cookie', offset: 0, size: 8 },
    { name: 'service_id', offset: 8, size: 4 },
    { name: 'pad', offset: 12, size: 4 },
  ],
  encode: (v, buf, off) => {
    buf.writeBigUInt64LE(v.netnsCookie, off);
    buf.writeUInt32LE(u32(v.serviceId, 'service id'), off + 8);
    buf.writeUInt32LE(0, off + 12);
  },
  decode: (buf, off) => ({ netnsCookie: buf.readBigUInt64LE(off), serviceId: buf.readUInt32LE(off + 8) }),
};

/** sl_lb_affinity_match: a backend an affinity backend set (its id, as in sl_services) has active, in its Maglev table. */
export interface AffinityMatchKey {
  serviceId: number;
  backendId: number;
}
export const affinityMatchKey: Codec<AffinityMatchKey> = {
  cType: 'sl_affinity_match_key',
  size: 8,
  fields: [
    { name: 'service_id', offset: 0, size: 4 },
    { name: 'backend_id', offset: 4, size: 4 },
  ],
  encode: (v, buf, off) => {
    buf.writeUInt32LE(u32(v.serviceId, 'service id'), off);
    buf.writeUInt32LE(u32(v.backendId, 'backend id'), off + 4);
  },
  decode: (buf, off) => ({ serviceId: buf.readUInt32LE(off), backendId: buf.readUInt32LE(off + 4) }),
};

/** Presence is the value (4 zero bytes). */
export type AffinityMatchValue = Record<string, never>;
export const affinityMatchValue: Codec<AffinityMatchValue> = {
  cType: 'sl_affinity_match_value',
  size: 4,
  fields: [{ name: 'pad', offset: 0, size: 4 }],
  encode: (_v, buf, off) => void buf.writeUInt32LE(0, off),
  decode: () => ({}),
};

// ---- masquerade (sl_snat, sl_snat_rev) -----------------------------------------------------------------------

/** The masquerade also translates ICMP echo: its identifier is the pod's "port" (the peer's is 0). */
export type SnatProto = L4Proto | 'icmp';
const IPPROTO_ICMP = 1;
const snatProtoNumber = (p: SnatProto) => (p === 'icmp' ? IPPROTO_ICMP : protoNumber(p));
const snatProtoName = (n: number): SnatProto => (n === IPPROTO_ICMP ? 'icmp' : protoName(n));

/** Forward {pod, pod port, peer, peer port}; reverse {node IP, NAT port, peer, peer port}. */
export interface SnatKey {
  addr: string;
  port: number;
  peerIp: string;
  peerPort: number;
  proto: SnatProto;
}
export const snatKey: Codec<SnatKey> = {
  cType: 'sl_snat_key',
  size: 16,
  fields: [
    { name: 'addr', offset: 0, size: 4 },
    { name: 'peer_ip', offset: 4, size: 4 },
    { name: 'port', offset: 8, size: 2 },
    { name: 'peer_port', offset: 10, size: 2 },
    { name: 'proto', offset: 12, size: 1 },
    { name: 'pad', offset: 13, size: 3 },
  ],
  encode: (v, buf, off) => {
    writeIpv4(v.addr, buf, off);
    writeIpv4(v.peerIp, buf, off + 4);
    buf.writeUInt16BE(port(v.port), off + 8);
    buf.writeUInt16BE(port(v.peerPort), off + 10);
    buf[off + 12] = snatProtoNumber(v.proto);
    buf.fill(0, off + 13, off + 16);
  },
  decode: (buf, off) => ({
    addr: readIpv4(buf, off),
    peerIp: readIpv4(buf, off + 4),
    port: buf.readUInt16BE(off + 8),
    peerPort: buf.readUInt16BE(off + 10),
    proto: snatProtoName(buf[off + 12] ?? 0),
  }),
};

export interface SnatValue {
  addr: string;
  port: number;
  /** SNAT_F_*; written by the programs (0 when the agent writes an entry). */
  flags?: number;
  /** CLOCK_MONOTONIC seconds of this direction's last packet (0 when the agent writes an entry). */
  lastSeen?: number;
}
export const snatValue: Codec<SnatValue> = {
  cType: 'sl_snat_value',
  size: 12,
  fields: [
    { name: 'addr', offset: 0, size: 4 },
    { name: 'port', offset: 4, size: 2 },
    { name: 'flags', offset: 6, size: 1 },
    { name: 'pad', offset: 7, size: 1 },
    { name: 'last_seen', offset: 8, size: 4 },
  ],
  encode: (v, buf, off) => {
    writeIpv4(v.addr, buf, off);
    buf.writeUInt16BE(port(v.port), off + 4);
    buf[off + 6] = u8(v.flags ?? 0, 'flags');
    buf[off + 7] = 0;
    buf.writeUInt32LE(u32(v.lastSeen ?? 0, 'last seen'), off + 8);
  },
  decode: (buf, off) => ({ addr: readIpv4(buf, off), port: buf.readUInt16BE(off + 4), flags: buf[off + 6] ?? 0, lastSeen: buf.readUInt32LE(off + 8) }),
};

export const SNAT_F_CLOSING = 0x1;
/** SL_SNAT_LIFETIME_*: seconds a masqueraded flow may stay idle before the agent's GC removes its mapping. */
export const SNAT_LIFETIME = { tcp: 21_600, closing: 10, udp: 60, icmp: 30 } as const;

/** SL_SNAT_PORT_MIN..SL_SNAT_PORT_MAX: the masquerade's NAT ports, host order (above ip_local_port_range). */
export const SNAT_PORT_MIN = 61_000;
export const SNAT_PORT_MAX = 65_535;
/** SL_MARK_SNAT_BPF: the skb->mark bit of a pod's packet whose masquerade is BPF's (Sluice's iptables chain returns on it). */
export const SNAT_MARK_BPF = 0x0010_0000;

// ---- sl_ipmasq -----------------------------------------------------------------------------------------------

/** SL_IPMASQ_F_NODE: the entry is a cluster node's IP, kept by the agent (not configuration). */
export const IPMASQ_F_NODE = 0x1;
/** sl_ipmasq's value (key: lpmKey): a nonMasqueradeCIDR, or a node's IP (IPMASQ_F_NODE). */
export interface IpmasqValue {
  flags: number;
}
export const ipmasqValue: Codec<IpmasqValue> = {
  cType: 'sl_ipmasq_value',
  size: 4,
  fields: [{ name: 'flags', offset: 0, size: 4 }],
  encode: (v, buf, off) => buf.writeUInt32LE(u32(v.flags, 'flags'), off),
  decode: (buf, off) => ({ flags: buf.readUInt32LE(off) }),
};

// ---- sl_config -----------------------------------------------------------------------------------------------

export const CFG_F_BPF_HOST_ROUTING = 0x1;
export const CFG_F_TUNNEL = 0x2;
export const CFG_F_MASQUERADE = 0x4;
export interface NodeConfig {
  /** Redirect in BPF (bpf_redirect_peer/neigh); false = legacy host routing, the kernel stack forwards. */
  bpfHostRouting: boolean;
  /** VXLAN tunnel mode; false = native routing. */
  tunnel: boolean;
  /** SNAT local pods' TCP/UDP/ICMP echo to destinations outside the cluster (not in the ipcache) to nodeIp. Default off. */
  masquerade?: boolean;
  nodeIp: string;
  uplinkIfindex: number;
  tunnelIfindex: number;
  vni: number;
  uplinkMac: string;
}
export const nodeConfig: Codec<NodeConfig> = {
  cType: 'sl_config',
  size: 28,
  fields: [
    { name: 'flags', offset: 0, size: 4 },
    { name: 'node_ip', offset: 4, size: 4 },
    { name: 'uplink_ifindex', offset: 8, size: 4 },
    { name: 'tunnel_ifindex', offset: 12, size: 4 },
    { name: 'vni', offset: 16, size: 4 },
    { name: 'uplink_mac', offset: 20, size: 6 },
    { name: 'pad', offset: 26, size: 2 },
  ],
  encode: (v, buf, off) => {
    buf.writeUInt32LE((v.bpfHostRouting ? CFG_F_BPF_HOST_ROUTING : 0) | (v.tunnel ? CFG_F_TUNNEL : 0) | (v.masquerade ? CFG_F_MASQUERADE : 0), off);
    writeIpv4(v.nodeIp, buf, off + 4);
    buf.writeUInt32LE(u32(v.uplinkIfindex, 'uplinkIfindex'), off + 8);
    buf.writeUInt32LE(u32(v.tunnelIfindex, 'tunnelIfindex'), off + 12);
    buf.writeUInt32LE(u32(v.vni, 'vni'), off + 16);
    writeMac(v.uplinkMac, buf, off + 20);
    buf.writeUInt16LE(0, off + 26);
  },
  decode: (buf, off) => {
    const flags = buf.readUInt32LE(off);
    return {
      bpfHostRouting: (flags & CFG_F_BPF_HOST_ROUTING) !== 0,
      tunnel: (flags & CFG_F_TUNNEL) !== 0,
      masquerade: (flags & CFG_F_MASQUERADE) !== 0,
      nodeIp: readIpv4(buf, off + 4),
      uplinkIfindex: buf.readUInt32LE(off + 8),
      tunnelIfindex: buf.readUInt32LE(off + 12),
      vni: buf.readUInt32LE(off + 16),
      uplinkMac: readMac(buf, off + 20),
    };
  },
};

// ---- sl_counters ---------------------------------------------------------------------------------------------

export interface Counter {
  packets: bigint;
  bytes: bigint;
}
export const counterValue: Codec<Counter> = {
  cType: 'sl_counter',
  size: 16,
  fields: [
    { name: 'packets', offset: 0, size: 8 },
    { name: 'bytes', offset: 8, size: 8 },
  ],
  encode: (v, buf, off) => {
    buf.writeBigUInt64LE(v.packets, off);
    buf.writeBigUInt64LE(v.bytes, off + 8);
  },
  decode: (buf, off) => ({ packets: buf.readBigUInt64LE(off), bytes: buf.readBigUInt64LE(off + 8) }),
};

/** enum sl_counter_index. */
export const COUNTERS = {
  fromContainer: 0,
  fromContainerLocal: 1,
  fromContainerNeigh: 2,
  fromContainerTunnel: 3,
  fromContainerPass: 4,
  fromNetdev: 5,
  fromNetdevLocal: 6,
  fromNetdevPass: 7,
  fromOverlay: 8,
  fromOverlayLocal: 9,
  fromOverlayPass: 10,
  toOverlay: 11,
  toOverlayEncap: 12,
  toOverlayNoRoute: 13,
  dropMalformed: 14,
  legacy: 15,
  lbDnat: 16,
  lbNoBackend: 17,
  lbRevNat: 18,
  snat: 19,
  snatRev: 20,
  snatNoPort: 21,
  toNetdev: 22,
  lbReject: 23,
  lbDropLocal: 24,
  dropSpoofed: 25,
  lbCtHit: 26,
  lbSnat: 27,
  lbHairpin: 28,
  xdp: 29,
  xdpFwd: 30,
  xdpPass: 31,
  ttlExceeded: 32,
  snatUnsupported: 33,
  snatIcmp: 34,
} as const;
export type CounterName = keyof typeof COUNTERS;

// ---- the maps ------------------------------------------------------------------------------------------------

/** Sizes: see the table in bpf/include/sluice_maps.h (100,000 pods, 5,000 nodes). */
export const MAX_ENDPOINTS = 131_072;
export const MAX_IPCACHE_HOST = 262_144;
export const MAX_IPCACHE = 65_536;
export const MAX_TUNNEL = 16_384;
export const NUM_COUNTERS = 40;
export const MAX_SERVICES = 65_536;
export const MAX_BACKENDS = 262_144;
export const MAX_LB_CT = 262_144;
export const MAX_AFFINITY = 65_536;
export const MAX_AFFINITY_MATCH = 262_144;
export const MAX_AFFINITY_SOCK = 16_384;
export const MAX_SOCK_NAT = 65_536;
export const MAX_SNAT = 131_072;
export const MAX_IPMASQ = 16_384;

export const endpointsMap: MapSpec<EndpointKey, EndpointValue> = {
  name: 'sl_endpoints',
  type: 'hash',
  maxEntries: MAX_ENDPOINTS,
  key: endpointKey,
  value: endpointValue,
};
/** The ipcache's single addresses (/32), exact match: looked up before the LPM trie, flat cost at 100k pods. */
export const ipcacheHostMap: MapSpec<EndpointKey, IpcacheValue> = {
  name: 'sl_ipcache_host',
  type: 'hash',
  maxEntries: MAX_IPCACHE_HOST,
  noPrealloc: true,
  key: endpointKey,
  value: ipcacheValue,
};
/** The ipcache's prefixes (shorter than /32): podCIDRs and other CIDRs. */
export const ipcacheMap: MapSpec<LpmKey, IpcacheValue> = {
  name: 'sl_ipcache',
  type: 'lpm_trie',
  maxEntries: MAX_IPCACHE,
  noPrealloc: true,
  key: lpmKey,
  value: ipcacheValue,
};
export const tunnelMap: MapSpec<LpmKey, TunnelValue> = {
  name: 'sl_tunnel',
  type: 'lpm_trie',
  maxEntries: MAX_TUNNEL,
  noPrealloc: true,
  key: lpmKey,
  value: tunnelValue,
};
export const configMap: MapSpec<number, NodeConfig> = {
  name: 'sl_config',
  type: 'array',
  maxEntries: 1,
  key: u32Codec,
  value: nodeConfig,
};
export const countersMap: MapSpec<number, Counter> = {
  name: 'sl_counters',
  type: 'percpu_array',
  maxEntries: NUM_COUNTERS,
  key: u32Codec,
  value: counterValue,
};

export const servicesMap: MapSpec<ServiceKey, ServiceValue> = {
  name: 'sl_services',
  type: 'hash',
  maxEntries: MAX_SERVICES,
  noPrealloc: true,
  key: serviceKey,
  value: serviceValue,
};
/** One Maglev table per backend set (a service's frontends share it unless a Local traffic policy differs). */
export const maglevMap: MapSpec<number, MaglevTable> = {
  name: 'sl_lb_maglev',
  type: 'hash',
  maxEntries: MAX_SERVICES,
  noPrealloc: true,
  key: u32Codec,
  value: maglevValue,
};
export const backendsMap: MapSpec<BackendKey, BackendValue> = {
  name: 'sl_backends',
  type: 'hash',
  maxEntries: MAX_BACKENDS,
  noPrealloc: true,
  key: backendKey,
  value: backendValue,
};
/** Forward connection tracking, written by the programs; the agent only reads it and deletes expired entries. */
export const lbFwdMap: MapSpec<LbTuple, LbFwdValue> = {
  name: 'sl_lb_fwd',
  type: 'lru_hash',
  maxEntries: MAX_LB_CT,
  key: lbTuple,
  value: lbFwdValue,
};
/** Reverse NAT of load-balanced flows, written by the programs. */
export const lbCtMap: MapSpec<LbTuple, LbRevValue> = {
  name: 'sl_lb_ct',
  type: 'lru_hash',
  maxEntries: MAX_LB_CT,
  key: lbTuple,
  value: lbRevValue,
};
export const affinityMap: MapSpec<AffinityKey, AffinityValue> = {
  name: 'sl_lb_affinity',
  type: 'lru_hash',
  maxEntries: MAX_AFFINITY,
  key: affinityKey,
  value: affinityValue,
};
/** The socket LB's sessionAffinity entries, (network namespace cookie, service id), written by the cgroup programs. */
export const affinitySockMap: MapSpec<AffinitySockKey, AffinityValue> = {
  name: 'sl_lb_affinity_sock',
  type: 'lru_hash',
  maxEntries: MAX_AFFINITY_SOCK,
  key: affinitySockKey,
  value: affinityValue,
};
/**
 * The active backends of each backend set with sessionAffinity ClientIP, written by the agent: the programs follow a
 * client's affinity entry only to a backend listed here for that set.
 */
export const affinityMatchMap: MapSpec<AffinityMatchKey, AffinityMatchValue> = {
  name: 'sl_lb_affinity_match',
  type: 'hash',
  maxEntries: MAX_AFFINITY_MATCH,
  noPrealloc: true,
  key: affinityMatchKey,
  value: affinityMatchValue,
};

/** Unconnected UDP of the node's own processes (socket LB), written by sock4_sendmsg, read by sock4_recvmsg. */
export const sockNatMap: MapSpec<SockKey, SockValue> = {
  name: 'sl_lb_sock',
  type: 'lru_hash',
  maxEntries: MAX_SOCK_NAT,
  key: sockKey,
  value: sockValue,
};

/** Masquerade state, written by to_netdev (forward) and read by from_netdev (reverse). */
export const snatMap: MapSpec<SnatKey, SnatValue> = { name: 'sl_snat', type: 'hash', maxEntries: MAX_SNAT, noPrealloc: true, key: snatKey, value: snatValue };
export const snatRevMap: MapSpec<SnatKey, SnatValue> = { name: 'sl_snat_rev', type: 'hash', maxEntries: MAX_SNAT, noPrealloc: true, key: snatKey, value: snatValue };

export const ipmasqMap: MapSpec<LpmKey, IpmasqValue> = { name: 'sl_ipmasq', type: 'lpm_trie', maxEntries: MAX_IPMASQ, noPrealloc: true, key: lpmKey, value: ipmasqValue };

export const MAPS = [endpointsMap, ipcacheHostMap, ipcacheMap, tunnelMap, configMap, countersMap, servicesMap, maglevMap, backendsMap, lbFwdMap, lbCtMap, affinityMap, affinitySockMap, affinityMatchMap, sockNatMap, snatMap, snatRevMap, ipmasqMap] as const;

/** The programs in the object and where they go. */
export const PROGRAMS = {
  fromContainer: { name: 'from_container', attach: 'ingress', on: "a pod's host-side veth" },
  fromNetdev: { name: 'from_netdev', attach: 'ingress', on: "the node's uplink" },
  toNetdev: { name: 'to_netdev', attach: 'egress', on: "the node's uplink" },
  fromOverlay: { name: 'from_overlay', attach: 'ingress', on: 'the VXLAN device' },
  toOverlay: { name: 'to_overlay', attach: 'egress', on: 'the VXLAN device' },
  toContainer: { name: 'to_container', attach: 'egress', on: "a pod's host-side veth" },
  xdpNetdev: { name: 'xdp_netdev', attach: 'xdp', on: "the node's uplink (--lb-acceleration)" },
  sockConnect4: { name: 'sock4_connect', attach: 'cgroup/connect4', on: "the node's cgroup (host-namespace clients)" },
  sockSendmsg4: { name: 'sock4_sendmsg', attach: 'cgroup/sendmsg4', on: "the node's cgroup (unconnected UDP)" },
  sockRecvmsg4: { name: 'sock4_recvmsg', attach: 'cgroup/recvmsg4', on: "the node's cgroup (unconnected UDP)" },
} as const;
export type ProgramName = (typeof PROGRAMS)[keyof typeof PROGRAMS]['name'];
