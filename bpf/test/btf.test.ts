/**
 * The TypeScript codecs against the C structs, through the BTF clang put in the object: every struct's size and
 * every member's name, offset and size must match, and every map's key/value types and max_entries must be the
 * ones the map specs name. Then round trips and rejects of the codecs themselves.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  CodecError,
  MAPS,
  OBJECT_PATH,
  endpointKey,
  endpointValue,
  lpmKey,
  nodeConfig,
  counterValue,
  ipcacheValue,
  tunnelValue,
  serviceKey,
  serviceValue,
  backendKey,
  backendValue,
  lbTuple,
  lbFwdValue,
  lbRevValue,
  maglevValue,
  affinityKey,
  affinityValue,
  affinitySockKey,
  affinityMatchKey,
  affinityMatchValue,
  sockKey,
  sockValue,
  MAGLEV_M,
  snatKey,
  snatValue,
  ipmasqValue,
  SNAT_MARK_BPF,
  IPMASQ_F_NODE,
  SNAT_F_CLOSING,
  SNAT_LIFETIME,
  COUNTERS,
  NUM_COUNTERS,
  SNAT_PORT_MAX,
  SNAT_PORT_MIN,
  SVC_F_AFFINITY,
  SVC_F_DROP,
  SVC_F_EXTERNAL,
  SVC_F_NODE_ADDR,
  type Codec,
} from '../src/index.ts';

interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: Array<{ name: string; type_id: number; bits_offset: number }>;
}

let types = new Map<number, BtfType>();

function sizeOf(id: number): number {
  const t = types.get(id);
  if (!t) throw new Error(`no BTF type ${id}`);
  if (t.kind === 'TYPEDEF' || t.kind === 'CONST' || t.kind === 'VOLATILE') return sizeOf(t.type_id!);
  if (t.kind === 'ARRAY') return sizeOf(t.type_id!) * t.nr_elems!;
  if (t.size !== undefined) return t.size;
  throw new Error(`no size for BTF ${t.kind} ${t.name}`);
}

function byName(kind: string, name: string): BtfType {
  const t = [...types.values()].find((x) => x.kind === kind && x.name === name);
  if (!t) throw new Error(`BTF has no ${kind} ${name}`);
  return t;
}

function layoutOf(name: string): { size: number; fields: Array<{ name: string; offset: number; size: number }> } {
  const t = byName('STRUCT', name);
  return { size: t.size!, fields: t.members!.map((m) => ({ name: m.name, offset: m.bits_offset / 8, size: sizeOf(m.type_id) })) };
}

beforeAll(() => {
  execFileSync('make', ['-s', '-C', fileURLToPath(new URL('..', import.meta.url))]);
  const json = JSON.parse(execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', OBJECT_PATH, 'format', 'raw'], { encoding: 'utf8' })) as { types: BtfType[] };
  types = new Map(json.types.map((t) => [t.id, t]));
});

describe('codecs agree with the C structs (BTF)', () => {
  const codecs: Array<Codec<never>> = [
    endpointKey,
    endpointValue,
    lpmKey,
    ipcacheValue,
    tunnelValue,
    nodeConfig,
    counterValue,
    serviceKey,
    serviceValue,
    backendKey,
    backendValue,
    lbTuple,
    lbFwdValue,
    lbRevValue,
    maglevValue,
    affinityKey,
    affinityValue,
    affinitySockKey,
    affinityMatchKey,
    affinityMatchValue,
    sockKey,
    sockValue,
    snatKey,
    snatValue,
    ipmasqValue,
  ] as Array<Codec<never>>;
  for (const codec of codecs) {
    it(`struct ${codec.cType}`, () => {
      const c = layoutOf(codec.cType);
      expect({ size: codec.size, fields: codec.fields }).toEqual(c);
    });
  }

  it('every map in the object has the key/value structs, type and max_entries of its spec', () => {
    const mapTypes: Record<string, number> = { hash: 1, array: 2, percpu_array: 6, lru_hash: 9, lpm_trie: 11 };
    const section = byName('DATASEC', '.maps') as BtfType & { vars?: unknown };
    expect(section).toBeTruthy();
    for (const spec of MAPS) {
      const variable = byName('VAR', spec.name);
      const def = types.get(variable.type_id!)!;
      const member = (n: string) => def.members!.find((m) => m.name === n)!;
      // __uint(name, N) is `int (*name)[N]`; __type(name, T) is `T *name`.
      const arrayLen = (n: string) => types.get(types.get(member(n).type_id)!.type_id!)!.nr_elems;
      const pointee = (n: string) => {
        let t = types.get(types.get(member(n).type_id)!.type_id!)!;
        while (t.kind === 'TYPEDEF' && t.name !== spec.key.cType && t.name !== spec.value.cType) t = types.get(t.type_id!)!;
        return t;
      };
      expect(arrayLen('type'), spec.name).toBe(mapTypes[spec.type]);
      expect(arrayLen('max_entries'), spec.name).toBe(spec.maxEntries);
      expect(def.members!.some((m) => m.name === 'map_flags') ? arrayLen('map_flags') : 0, spec.name).toBe(spec.noPrealloc ? 1 : 0);
      expect(pointee('key').name, spec.name).toBe(spec.key.cType);
      expect(pointee('value').name, spec.name).toBe(spec.value.cType);
      expect(sizeOf(types.get(member('key').type_id)!.type_id!), spec.name).toBe(spec.key.size);
      expect(sizeOf(types.get(member('value').type_id)!.type_id!), spec.name).toBe(spec.value.size);
    }
  });
});

describe('constants agree with the C header', () => {
  it('COUNTERS is enum sl_counter_index, name for name (SL_CNT_FROM_CONTAINER_LOCAL: fromContainerLocal), within the map', () => {
    // An enum only used for its constants has no BTF: read it from the header.
    const header = readFileSync(fileURLToPath(new URL('../include/sluice_maps.h', import.meta.url)), 'utf8');
    const body = /enum sl_counter_index \{([^}]*)\}/.exec(header)![1]!;
    const camel = (n: string) => n.toLowerCase().replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
    expect(Object.fromEntries([...body.matchAll(/SL_CNT_(\w+) = (\d+)/g)].map((m) => [camel(m[1]!), Number(m[2])]))).toEqual(COUNTERS);
    expect(Math.max(...Object.values(COUNTERS))).toBeLessThan(NUM_COUNTERS);
  });

  it('service frontend flags, as the C preprocessor sees them', () => {
    const include = fileURLToPath(new URL('../include', import.meta.url));
    const names = ['SL_SVC_F_EXTERNAL', 'SL_SVC_F_AFFINITY', 'SL_SVC_F_DROP', 'SL_SVC_F_NODE_ADDR'];
    const source = `#include "sluice_maps.h"\n${names.join('\n')}\n`;
    const out = execFileSync('clang', ['-E', '-P', '-I', include, '-x', 'c', '-'], { input: source, encoding: 'utf8' }).trim().split('\n').slice(-names.length);
    expect(out.map((v) => Number(v))).toEqual([SVC_F_EXTERNAL, SVC_F_AFFINITY, SVC_F_DROP, SVC_F_NODE_ADDR]);
  });

  it('NAT port range, the BPF masquerade mark, its flags and lifetimes, as the C preprocessor sees them', () => {
    const include = fileURLToPath(new URL('../include', import.meta.url));
    const names = ['SL_IPMASQ_F_NODE', 'SL_SNAT_PORT_MIN', 'SL_SNAT_PORT_MAX', 'SL_MARK_SNAT_BPF', 'SL_SNAT_F_CLOSING', 'SL_SNAT_LIFETIME_TCP', 'SL_SNAT_LIFETIME_CLOSING', 'SL_SNAT_LIFETIME_UDP', 'SL_SNAT_LIFETIME_ICMP'];
    const source = `#include "sluice_maps.h"\n${names.map((n) => `${n}`).join('\n')}\n`;
    const out = execFileSync('clang', ['-E', '-P', '-I', include, '-x', 'c', '-'], { input: source, encoding: 'utf8' }).trim().split('\n').slice(-names.length);
    expect(out.map((v) => Number(v))).toEqual([IPMASQ_F_NODE, SNAT_PORT_MIN, SNAT_PORT_MAX, SNAT_MARK_BPF, SNAT_F_CLOSING, SNAT_LIFETIME.tcp, SNAT_LIFETIME.closing, SNAT_LIFETIME.udp, SNAT_LIFETIME.icmp]);
    // Above the kernel's default ip_local_port_range (32768..60999) and inside the port space.
    expect(SNAT_PORT_MIN).toBeGreaterThan(60_999);
    expect(SNAT_PORT_MAX).toBeLessThanOrEqual(65_535);
  });
});

describe('codecs', () => {
  function roundTrip<T>(codec: Codec<T>, value: T): Buffer {
    const buf = Buffer.alloc(codec.size + 3, 0xaa);
    codec.encode(value, buf, 3);
    expect(codec.decode(buf, 3)).toEqual(value);
    return buf.subarray(3);
  }

  it('round-trips every struct, with addresses in wire order and integers little-endian', () => {
    expect(roundTrip(endpointKey, { ip: '10.1.2.3' }).toString('hex')).toBe('0a010203');
    expect(roundTrip(endpointValue, { ifindex: 258, flags: 1, mac: '02:00:00:aa:bb:cc', nodeMac: 'fe:ff:ff:ff:ff:ff' }).toString('hex')).toBe(
      '02010000' + '01000000' + '020000aabbcc' + 'feffffffffff',
    );
    expect(roundTrip(lpmKey, { cidr: '10.1.0.0/16' }).toString('hex')).toBe('100000000a010000');
    roundTrip(ipcacheValue, { nodeIp: '192.168.0.1', flags: 1 });
    roundTrip(tunnelValue, { nodeIp: '192.168.0.2', vni: 42 });
    roundTrip(snatKey, { addr: '10.1.1.11', port: 40000, peerIp: '8.8.8.8', peerPort: 53, proto: 'udp' });
    expect(roundTrip(snatValue, { addr: '192.168.0.1', port: 61000, flags: SNAT_F_CLOSING, lastSeen: 123456 }).toString('hex')).toBe('c0a80001ee48010040e20100');
    roundTrip(nodeConfig, { bpfHostRouting: true, tunnel: false, masquerade: true, nodeIp: '1.2.3.4', uplinkIfindex: 2, tunnelIfindex: 3, vni: 7, uplinkMac: '02:00:00:00:00:01' });
    roundTrip(counterValue, { packets: 5n, bytes: 2n ** 40n });
    expect(roundTrip(serviceKey, { vip: '10.96.0.10', port: 80, proto: 'tcp' }).toString('hex')).toBe('0a60000a' + '0050' + '06' + '00');
    expect(roundTrip(serviceValue, { id: 7, count: 3, flags: 3, affinityTimeout: 10800 }).toString('hex')).toBe('07000000' + '0300' + '03' + '00' + '302a0000');
    expect(roundTrip(backendKey, { id: 258 }).toString('hex')).toBe('02010000');
    expect(roundTrip(backendValue, { ip: '10.1.1.11', port: 8080, flags: 1 }).toString('hex')).toBe('0a01010b' + '1f90' + '01' + '00');
    expect(roundTrip(lbTuple, { clientIp: '10.1.1.11', peerIp: '10.1.2.21', clientPort: 40000, peerPort: 7070, proto: 'udp' }).toString('hex')).toBe(
      '0a01010b' + '0a010215' + '9c40' + '1b9e' + '11' + '000000',
    );
    expect(roundTrip(lbFwdValue, { backendId: 5, expires: 1000, serviceId: 7, natPort: 32768, flags: 1 }).toString('hex')).toBe(
      '05000000' + 'e8030000' + '07000000' + '8000' + '01' + '00',
    );
    expect(roundTrip(lbRevValue, { vip: '10.96.0.10', vport: 53, clientIp: '192.168.0.9', clientPort: 40000 }).toString('hex')).toBe('0a60000a' + '0035' + '9c40' + 'c0a80009');
    expect(roundTrip(affinityKey, { serviceId: 7, clientIp: '10.1.1.11' }).toString('hex')).toBe('07000000' + '0a01010b');
    roundTrip(affinityValue, { backendId: 5, lastUsed: 123 });
    expect(roundTrip(affinitySockKey, { netnsCookie: 2n ** 40n + 3n, serviceId: 7 }).toString('hex')).toBe('0300000000010000' + '07000000' + '00000000');
    expect(roundTrip(affinityMatchKey, { serviceId: 7, backendId: 258 }).toString('hex')).toBe('07000000' + '02010000');
    expect(roundTrip(affinityMatchValue, {}).toString('hex')).toBe('00000000');
    expect(roundTrip(sockKey, { cookie: 2n ** 40n + 3n, addr: '10.1.1.11', port: 53 }).toString('hex')).toBe('0300000000010000' + '0a01010b' + '0035' + '0000');
    roundTrip(sockValue, { vip: '10.96.0.10', vport: 53 });
    const table = new Uint32Array(MAGLEV_M).map((_, i) => i * 3);
    const bytes = roundTrip(maglevValue, table);
    expect(bytes.readUInt32LE(4 * 1008)).toBe(3024);
    expect(() => maglevValue.encode(new Uint32Array(10), Buffer.alloc(MAGLEV_M * 4), 0)).toThrow(CodecError);
  });

  it('clears host bits of a CIDR, so equal prefixes are equal keys', () => {
    const a = Buffer.alloc(8);
    const b = Buffer.alloc(8);
    lpmKey.encode({ cidr: '10.1.2.3/16' }, a, 0);
    lpmKey.encode({ cidr: '10.1.0.0/16' }, b, 0);
    expect(a.equals(b)).toBe(true);
    lpmKey.encode({ cidr: '10.9.9.9' }, a, 0);
    expect(lpmKey.decode(a, 0)).toEqual({ cidr: '10.9.9.9/32' });
    lpmKey.encode({ cidr: '0.0.0.0/0' }, a, 0);
    expect(lpmKey.decode(a, 0)).toEqual({ cidr: '0.0.0.0/0' });
  });

  it('rejects bad addresses, CIDRs, MACs and out-of-range integers with a CodecError', () => {
    const buf = Buffer.alloc(32);
    for (const ip of ['10.1.2', '10.1.2.256', '1.2.3.4.5', 'a.b.c.d', '', '10..1.2', '1.2.3.4 ']) {
      expect(() => endpointKey.encode({ ip }, buf, 0), ip).toThrow(CodecError);
    }
    for (const cidr of ['10.0.0.0/33', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/8x', 'fd00::/64']) {
      expect(() => lpmKey.encode({ cidr }, buf, 0), cidr).toThrow(CodecError);
    }
    expect(() => endpointValue.encode({ ifindex: 1, flags: 0, mac: '02:00:00:00:00', nodeMac: '02:00:00:00:00:01' }, buf, 0)).toThrow(CodecError);
    expect(() => endpointValue.encode({ ifindex: -1, flags: 0, mac: '02:00:00:00:00:01', nodeMac: '02:00:00:00:00:01' }, buf, 0)).toThrow(CodecError);
    expect(() => tunnelValue.encode({ nodeIp: '1.2.3.4', vni: 2 ** 32 }, buf, 0)).toThrow(CodecError);
  });
});
