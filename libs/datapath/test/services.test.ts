/**
 * The service load balancer in the kernel (BPF_PROG_TEST_RUN on the real programs, maps written by LbProgrammer):
 * DNAT to a Maglev-chosen backend, the forward entry that pins it across backend changes and terminating, reject of
 * a service without backends, NodePort with SNAT to a remote backend, hairpin, session affinity that follows only a
 * backend its service still has active (sl_lb_affinity_match); plus Maglev's own properties.
 */
import { randomBytes } from 'node:crypto';
import { BE_F_TERMINATING, HAIRPIN_IP, MAGLEV_M, type AffinityMatchKey } from '@sluice/bpf';
import { afterAll, describe, expect, it } from 'vitest';
import { activeBackends, LbProgrammer, loadDatapath, MaglevPool, maglevTable, memoryDatapath, removePins, simpleService, l4Frame, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, testRun, type Datapath, type LbBackend, type LbService } from '../src/index.ts';

const pinDirs: string[] = [];
afterAll(() => {
  for (const d of pinDirs) removePins(d);
});

function load(): Datapath {
  const dir = `/sys/fs/bpf/sluice/test-svc-${randomBytes(4).toString('hex')}`;
  pinDirs.push(dir);
  return loadDatapath({ pinDir: dir });
}

const frame = l4Frame;
const ip = (b: Buffer, off: number) => `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
const dstOf = (b: Buffer) => `${ip(b, 30)}:${b.readUInt16BE(36)}`;
const srcOf = (b: Buffer) => `${ip(b, 26)}:${b.readUInt16BE(34)}`;

const CLIENT = '10.0.0.1';
const VIP = '10.96.0.10';
const NODE_IP = '192.168.0.1';

function setup(): { dp: Datapath; lb: LbProgrammer; fromContainer: number; fromNetdev: number } {
  const dp = load();
  dp.setConfig({ bpfHostRouting: false, tunnel: false, nodeIp: NODE_IP, uplinkIfindex: 0, tunnelIfindex: 0, vni: 0, uplinkMac: '02:00:00:00:00:01' });
  // The client pod, on BPF_PROG_TEST_RUN's device (lo, ifindex 1), so from_container's source check passes.
  dp.maps.endpoints.upsertBatch([[{ ip: CLIENT }, { ifindex: 1, flags: 0, mac: '02:aa:bb:cc:dd:01', nodeMac: '02:11:22:33:44:01' }]]);
  const lb = new LbProgrammer(dp);
  lb.seed();
  return { dp, lb, fromContainer: dp.programs.from_container!, fromNetdev: dp.programs.from_netdev! };
}

const backends = (n: number, from = 1) => Array.from({ length: n }, (_, i) => ({ ip: `10.1.0.${from + i}`, port: 8080 }));

describe('Maglev', () => {
  it('spreads slots evenly and moves only the removed backend’s slots', () => {
    const named = Array.from({ length: 10 }, (_, i) => ({ name: `10.1.0.${i + 1}:8080`, id: i + 1 }));
    const table = maglevTable(named);
    const counts = new Map<number, number>();
    for (const id of table) counts.set(id, (counts.get(id) ?? 0) + 1);
    expect(counts.size).toBe(10);
    for (const c of counts.values()) expect(Math.abs(c - MAGLEV_M / 10)).toBeLessThanOrEqual(1);
    // Input order does not matter (every node computes the same table).
    expect(maglevTable([...named].reverse())).toEqual(table);
    const smaller = maglevTable(named.filter((b) => b.id !== 4));
    let moved = 0;
    for (let i = 0; i < MAGLEV_M; i++) if (table[i] !== 4 && smaller[i] !== table[i]) moved++;
    // Maglev is not perfectly minimal-disruption, but nearly: a few percent of the other slots at most.
    expect(moved / MAGLEV_M).toBeLessThan(0.05);
  });

  it('a backend two services share has one entry, terminating only while both say so: no service is out of date in a full pass', () => {
    const dp = memoryDatapath();
    const lb = new LbProgrammer(dp);
    const shared = { ip: '10.1.0.9', port: 8080 };
    const aWith = (terminating: boolean) => simpleService('a', '10.96.8.1', 80, 'tcp', [{ ...shared, terminating }, { ip: '10.1.0.10', port: 8080 }]);
    const bWith = (terminating: boolean) => simpleService('b', '10.96.8.2', 80, 'tcp', [{ ...shared, terminating }, { ip: '10.1.0.11', port: 8080 }]);
    const flags = () => dp.maps.backends.entries().find(([, v]) => v.ip === shared.ip)![1].flags;
    lb.applyMany([['a', aWith(false)], ['b', bWith(true)]]);
    // b calls it terminating, a still ready (informational: b's table leaves it out, b's affinity matches too).
    expect(flags()).toBe(0);
    // Whatever order, the same entry; a full pass finds nothing to rewrite (it used to flip between the two).
    expect(lb.prune([['a', aWith(false)], ['b', bWith(true)]]).outOfDate).toEqual([]);
    expect(lb.prune([['b', bWith(true)], ['a', aWith(false)]]).outOfDate).toEqual([]);
    lb.apply('a', aWith(true));
    expect(flags()).toBe(BE_F_TERMINATING);
    expect(lb.prune([['b', bWith(true)], ['a', aWith(true)]]).outOfDate).toEqual([]);
    lb.apply('b', bWith(false));
    expect(flags()).toBe(0);
    lb.apply('b', bWith(true));
    expect(flags()).toBe(BE_F_TERMINATING);
    // The last ready holder goes: the one left says terminating.
    lb.apply('a', aWith(false));
    expect(flags()).toBe(0);
    lb.apply('a', undefined);
    expect(flags()).toBe(BE_F_TERMINATING);
    expect(lb.prune([['b', bWith(true)]]).outOfDate).toEqual([]);
  });

  it('the worker pool builds the very tables maglevTable builds, in order, and an agent-sized batch programs the same maps', async () => {
    const specs = Array.from({ length: 300 }, (_, t) => Array.from({ length: 1 + (t % 7) }, (_, b) => ({ name: `10.2.${t}.${b}:80`, id: t * 8 + b + 1 })));
    const pool = new MaglevPool(2, 1_000);
    try {
      const built = await pool.build(specs);
      expect(pool.built).toBe(specs.length);
      for (let t = 0; t < specs.length; t++) expect(built.subarray(t * MAGLEV_M, (t + 1) * MAGLEV_M), `table ${t}`).toEqual(maglevTable(specs[t]!));
      // Through the programmer: the same entries as without the pool.
      const rows = Array.from({ length: 300 }, (_, i) => [`s${i}`, simpleService(`s${i}`, `10.96.9.${i % 250}`, 1000 + i, 'tcp', backends(3, i % 200))] as const);
      const [a, b] = [memoryDatapath(), memoryDatapath()];
      expect(new LbProgrammer(a).applyMany(rows)).toEqual([]);
      expect(await new LbProgrammer(b, { maglevPool: pool }).applyManyAsync(rows)).toEqual([]);
      expect(pool.built).toBe(2 * specs.length);
      expect(b.maps.maglev.entries()).toEqual(a.maps.maglev.entries());
      expect(b.maps.services.entries()).toEqual(a.maps.services.entries());
      expect(b.maps.backends.entries()).toEqual(a.maps.backends.entries());
    } finally {
      pool.close();
    }
  });

  it('takes ready backends; terminating-but-serving ones only when none is ready', () => {
    const b = (ip: string, ready: boolean, serving: boolean, terminating: boolean): LbBackend => ({ ip, port: 80, ready, serving, terminating, local: false });
    expect(activeBackends([b('10.0.0.2', true, true, false), b('10.0.0.1', false, true, true)]).map((x) => x.ip)).toEqual(['10.0.0.2']);
    expect(activeBackends([b('10.0.0.2', false, false, true), b('10.0.0.1', false, true, true)]).map((x) => x.ip)).toEqual(['10.0.0.1']);
    expect(activeBackends([b('10.0.0.1', false, false, false)])).toEqual([]);
  });
});

describe('LbProgrammer.applyMany', () => {
  it('programs many services in one batch per map; a backend shared by two services lives while one uses it', () => {
    const dp = memoryDatapath();
    const lb = new LbProgrammer(dp);
    const shared = { ip: '10.1.0.1', port: 8080 };
    expect(lb.applyMany([
      ['a', simpleService('a', '10.96.0.1', 80, 'tcp', [shared, { ip: '10.1.0.2', port: 8080 }])],
      ['b', simpleService('b', '10.96.0.2', 80, 'tcp', [shared])],
      ['c', simpleService('c', '10.96.0.3', 53, 'udp', [])],
    ])).toEqual([]);
    expect([dp.maps.services.count(), dp.maps.maglev.count(), dp.maps.backends.count()]).toEqual([3, 2, 2]);
    lb.applyMany([['a', undefined], ['c', undefined]]);
    expect(dp.maps.backends.entries().map(([, v]) => v.ip)).toEqual(['10.1.0.1']);
    lb.applyMany([['b', undefined], ['a', simpleService('a', '10.96.0.1', 80, 'tcp', [shared])]]);
    expect([dp.maps.services.count(), dp.maps.maglev.count(), dp.maps.backends.count()]).toEqual([1, 1, 1]);
    expect(lb.prune([['a', simpleService('a', '10.96.0.1', 80, 'tcp', [shared])]]).outOfDate).toEqual([]);
  });
});

describe('the service path in the kernel (BPF_PROG_TEST_RUN)', () => {
  it('DNATs a new flow to a Maglev backend and keeps it there across scaling and terminating', () => {
    const { dp, lb, fromContainer } = setup();
    try {
      lb.apply('web', simpleService('web', VIP, 80, 'tcp', backends(3)));
      const first = testRun(fromContainer, frame('tcp', CLIENT, 40000, VIP, 80));
      expect(first.retval).toBe(TC_ACT_OK);
      const chosen = dstOf(first.dataOut);
      expect(chosen).toMatch(/^10\.1\.0\.[123]:8080$/);
      // The same flow again, after scaling up to 10 backends: still the same backend (forward entry).
      lb.apply('web', simpleService('web', VIP, 80, 'tcp', backends(10)));
      const before = dp.readCounters().lbCtHit.packets;
      expect(dstOf(testRun(fromContainer, frame('tcp', CLIENT, 40000, VIP, 80, 0x10)).dataOut)).toBe(chosen);
      expect(dp.readCounters().lbCtHit.packets - before).toBe(1n);
      // Its backend turns terminating: the flow stays; new flows never pick it while others serve.
      const chosenIp = chosen.split(':')[0]!;
      lb.apply('web', simpleService('web', VIP, 80, 'tcp', backends(10).map((b) => ({ ...b, terminating: b.ip === chosenIp }))));
      expect(dp.maps.backends.entries().find(([, v]) => v.ip === chosenIp)?.[1].flags).toBe(BE_F_TERMINATING);
      expect(dstOf(testRun(fromContainer, frame('tcp', CLIENT, 40000, VIP, 80, 0x10)).dataOut)).toBe(chosen);
      const fresh = new Set<string>();
      for (let p = 41000; p < 41200; p++) fresh.add(dstOf(testRun(fromContainer, frame('tcp', CLIENT, p, VIP, 80)).dataOut));
      expect(fresh.has(chosen)).toBe(false);
      // Fair: 200 new flows over 9 serving backends reach all of them.
      expect(fresh.size).toBe(9);
      // The reply is translated back to the service address.
      const [bip, bport] = chosen.split(':');
      const reply = testRun(dp.programs.to_container!, frame('tcp', bip!, Number(bport), CLIENT, 40000, 0x12));
      expect(srcOf(reply.dataOut)).toBe(`${VIP}:80`);
    } finally {
      dp.close();
    }
  });

  it('rejects when a service has no backend: TCP RST and ICMP port unreachable from the service address', () => {
    const { dp, lb, fromContainer } = setup();
    try {
      lb.apply('empty', { frontends: [{ vip: VIP, port: 80, proto: 'tcp', external: false, set: 's' }, { vip: VIP, port: 53, proto: 'udp', external: false, set: 's' }], sets: [{ name: 's', backends: [], affinityTimeout: 0, dropWhenEmpty: false }] });
      const rst = testRun(fromContainer, frame('tcp', CLIENT, 40000, VIP, 80));
      expect(rst.retval).toBe(TC_ACT_REDIRECT);
      expect(srcOf(rst.dataOut)).toBe(`${VIP}:80`);
      expect(dstOf(rst.dataOut)).toBe(`${CLIENT}:40000`);
      expect(rst.dataOut[47]! & 0x14).toBe(0x14); // RST|ACK
      expect(rst.dataOut.readUInt32BE(42)).toBe(1000 + 4 + 1); // acknowledges the SYN and its 4 payload bytes
      const icmp = testRun(fromContainer, frame('udp', CLIENT, 40001, VIP, 53));
      expect(icmp.retval).toBe(TC_ACT_REDIRECT);
      expect(icmp.dataOut[23]).toBe(1);
      expect([icmp.dataOut[34], icmp.dataOut[35]]).toEqual([3, 3]);
      expect(ip(icmp.dataOut, 26)).toBe(VIP);
      // The quoted original: the client's own datagram to the service.
      expect(ip(icmp.dataOut, 42 + 16)).toBe(VIP);
      expect(icmp.dataOut.readUInt16BE(42 + 20)).toBe(40001);
      expect(dp.readCounters().lbReject.packets).toBe(2n);
      // A Local policy without a local backend drops instead (kube-proxy's rule: other nodes do not answer).
      lb.apply('empty', { frontends: [{ vip: VIP, port: 80, proto: 'tcp', external: true, set: 's' }], sets: [{ name: 's', backends: [], affinityTimeout: 0, dropWhenEmpty: true }] });
      expect(testRun(fromContainer, frame('tcp', CLIENT, 40002, VIP, 80)).retval).toBe(TC_ACT_SHOT);
      expect(dp.readCounters().lbDropLocal.packets).toBe(1n);
    } finally {
      dp.close();
    }
  });

  it('NodePort from the network: a remote backend gets SNAT to the node, its reply goes back to the client', () => {
    const { dp, lb, fromNetdev } = setup();
    try {
      const svc: LbService = {
        frontends: [{ vip: '0.0.0.0', port: 30080, proto: 'tcp', external: true, set: 'np' }],
        sets: [{ name: 'np', backends: [{ ip: '10.1.0.7', port: 8080, ready: true, serving: true, terminating: false, local: false }], affinityTimeout: 0, dropWhenEmpty: false }],
      };
      lb.apply('np', svc);
      const out = testRun(fromNetdev, frame('tcp', '192.168.0.200', 50000, NODE_IP, 30080));
      expect(out.retval).toBe(TC_ACT_OK);
      expect(dstOf(out.dataOut)).toBe('10.1.0.7:8080');
      expect(srcOf(out.dataOut)).toBe(`${NODE_IP}:50000`);
      // The backend's reply to the node: back to the real client, from the node's NodePort.
      const back = testRun(fromNetdev, frame('tcp', '10.1.0.7', 8080, NODE_IP, 50000, 0x12));
      expect(srcOf(back.dataOut)).toBe(`${NODE_IP}:30080`);
      expect(dstOf(back.dataOut)).toBe('192.168.0.200:50000');
      // A second client using the same port towards the same backend gets another NAT port.
      const other = testRun(fromNetdev, frame('tcp', '192.168.0.201', 50000, NODE_IP, 30080));
      expect(srcOf(other.dataOut)).not.toBe(`${NODE_IP}:50000`);
      // Not for this node's address: left alone.
      expect(dstOf(testRun(fromNetdev, frame('tcp', '192.168.0.200', 50001, '192.168.0.2', 30080)).dataOut)).toBe('192.168.0.2:30080');
    } finally {
      dp.close();
    }
  });

  it('hairpin: a pod reaching itself through its service sees the hairpin address, and its reply returns', () => {
    const { dp, lb, fromContainer } = setup();
    try {
      lb.apply('self', simpleService('self', VIP, 80, 'tcp', [{ ip: CLIENT, port: 8080, local: true }]));
      const out = testRun(fromContainer, frame('tcp', CLIENT, 40000, VIP, 80));
      expect(dstOf(out.dataOut)).toBe(`${CLIENT}:8080`);
      expect(srcOf(out.dataOut)).toBe(`${HAIRPIN_IP}:40000`);
      const reply = testRun(fromContainer, frame('tcp', CLIENT, 8080, HAIRPIN_IP, 40000, 0x12));
      expect(srcOf(reply.dataOut)).toBe(`${VIP}:80`);
      expect(dstOf(reply.dataOut)).toBe(`${CLIENT}:40000`);
    } finally {
      dp.close();
    }
  });

  it('restart: a new programmer reads the ids back, so the maps need no writes and flows keep their backend', () => {
    const { dp, lb, fromContainer } = setup();
    try {
      const svc = simpleService('web', VIP, 80, 'tcp', backends(4));
      lb.apply('web', svc);
      const chosen = dstOf(testRun(fromContainer, frame('tcp', CLIENT, 40000, VIP, 80)).dataOut);
      const again = new LbProgrammer(dp);
      again.seed();
      expect(again.prune([['web', svc]])).toMatchObject({ outOfDate: [], removed: { frontends: 0, tables: 0, backends: 0 } });
      expect(dstOf(testRun(fromContainer, frame('tcp', CLIENT, 40000, VIP, 80, 0x10)).dataOut)).toBe(chosen);
      // Drift: a deleted table is reported out of date; entries of services that are gone are removed.
      dp.maps.maglev.deleteBatch(dp.maps.maglev.entries().map(([k]) => k));
      expect(again.prune([['web', svc]]).outOfDate).toEqual(['web']);
      again.apply('web', svc);
      expect(again.prune([['web', svc]]).outOfDate).toEqual([]);
      // A table that names a backend the service does not have, or misses one of its backends, is out of date too.
      const [[setId, table]] = dp.maps.maglev.entries() as [[number, Uint32Array]];
      const ids = [...new Set(table)];
      dp.maps.maglev.upsertBatch([[setId, table.map((id) => (id === ids[0] ? 999_999 : id))]]);
      expect(again.prune([['web', svc]]).outOfDate).toEqual(['web']);
      again.apply('web', svc);
      dp.maps.maglev.upsertBatch([[setId, table.map((id) => (id === ids[0] ? ids[1]! : id))]]);
      expect(again.prune([['web', svc]]).outOfDate).toEqual(['web']);
      again.apply('web', svc);
      expect(again.prune([['web', svc]]).outOfDate).toEqual([]);
      expect(again.prune([]).removed).toEqual({ frontends: 1, tables: 1, backends: 4, affinityMatches: 0 });
    } finally {
      dp.close();
    }
  });
});

describe('session affinity follows a client only to a backend its service still has active (sl_lb_affinity_match)', () => {
  const VIP_B = '10.96.0.11';
  const sticky = (name: string, vip: string, bes: ReadonlyArray<{ ip: string; port: number; terminating?: boolean }>): LbService => {
    const svc = simpleService(name, vip, 80, 'tcp', bes);
    return { ...svc, sets: svc.sets.map((set) => ({ ...set, affinityTimeout: 300 })) };
  };
  const name = (b: { ip: string; port: number }) => `${b.ip}:${b.port}`;
  const connect = (dp: Datapath, client: string, port: number, vip: string) => dstOf(testRun(dp.programs.from_container!, frame('tcp', client, port, vip, 80)).dataOut);
  const backendId = (dp: Datapath, address: string) => dp.maps.backends.entries().find(([, v]) => name(v) === address)![0].id;
  const setId = (dp: Datapath, vip: string) => dp.maps.services.lookup({ vip, port: 80, proto: 'tcp' })!.id;
  const matched = (dp: Datapath, vip: string) => {
    const id = setId(dp, vip);
    const names = new Map(dp.maps.backends.entries().map(([k, v]) => [k.id, name(v)]));
    return dp.maps.affinityMatch.entries().filter(([k]) => k.serviceId === id).map(([k]) => names.get(k.backendId)).sort();
  };

  it('a backend removed from the service while another service still holds it: the client\'s next connection goes to a remaining backend', () => {
    const { dp, lb } = setup();
    try {
      const all = backends(3);
      expect(lb.applyMany([['a', sticky('a', VIP, all)], ['b', simpleService('b', VIP_B, 80, 'tcp', all)]])).toEqual([]);
      expect(matched(dp, VIP)).toEqual(all.map(name));
      // Only the affinity service has matches.
      expect(dp.maps.affinityMatch.count()).toBe(3);
      const pinned = connect(dp, CLIENT, 40000, VIP);
      // New connections (other source ports, which Maglev alone would spread) stay with it.
      for (let p = 40001; p < 40010; p++) expect(connect(dp, CLIENT, p, VIP)).toBe(pinned);
      const remaining = all.filter((b) => name(b) !== pinned);
      lb.apply('a', sticky('a', VIP, remaining));
      // b still has it: its backend entry stays, neither it nor its flags say anything about a.
      expect(dp.maps.backends.lookup({ id: backendId(dp, pinned) })).toMatchObject({ flags: 0 });
      expect(matched(dp, VIP)).toEqual(remaining.map(name));
      const moved = connect(dp, CLIENT, 40100, VIP);
      expect(remaining.map(name)).toContain(moved);
      // The client's affinity now follows the backend it moved to.
      for (let p = 40101; p < 40110; p++) expect(connect(dp, CLIENT, p, VIP)).toBe(moved);
      // b's clients still reach it; a's established flow keeps it (forward entry).
      const viaB = new Set<string>();
      for (let p = 41000; p < 41060; p++) viaB.add(connect(dp, CLIENT, p, VIP_B));
      expect(viaB.has(pinned)).toBe(true);
      expect(dstOf(testRun(dp.programs.from_container!, frame('tcp', CLIENT, 40000, VIP, 80, 0x10)).dataOut)).toBe(pinned);
    } finally {
      dp.close();
    }
  });

  it('a calls a shared backend terminating while b calls it ready: a\'s affinity client leaves it, b\'s stays on it', () => {
    const { dp, lb } = setup();
    try {
      // More clients on BPF_PROG_TEST_RUN's device: one of them gets pinned to the backend through b.
      const clients = Array.from({ length: 32 }, (_, i) => `10.0.1.${i + 1}`);
      dp.maps.endpoints.upsertBatch(clients.map((c, i) => [{ ip: c }, { ifindex: 1, flags: 0, mac: '02:aa:bb:cc:de:01', nodeMac: `02:11:22:33:45:${(i + 16).toString(16)}` }] as const));
      const aBackends = backends(3);
      lb.apply('a', sticky('a', VIP, aBackends));
      const x = connect(dp, CLIENT, 40000, VIP);
      const shared = aBackends.find((b) => name(b) === x)!;
      const other = { ip: '10.1.0.50', port: 8080 };
      lb.apply('b', sticky('b', VIP_B, [shared, other]));
      const bClient = clients.find((c) => connect(dp, c, 40000, VIP_B) === x);
      expect(bClient).toBeDefined();
      for (let p = 40001; p < 40010; p++) {
        expect(connect(dp, CLIENT, p, VIP)).toBe(x);
        expect(connect(dp, bClient!, p, VIP_B)).toBe(x);
      }
      // a says terminating, b ready: the shared entry is not terminating (b's say), which once kept a's client on it.
      lb.apply('a', sticky('a', VIP, aBackends.map((b) => ({ ...b, terminating: b === shared }))));
      expect(dp.maps.backends.lookup({ id: backendId(dp, x) })!.flags).toBe(0);
      expect(matched(dp, VIP)).toEqual(aBackends.filter((b) => b !== shared).map(name));
      expect(matched(dp, VIP_B)).toEqual([x, name(other)].sort());
      const moved = connect(dp, CLIENT, 40100, VIP);
      expect(moved).not.toBe(x);
      expect(aBackends.map(name)).toContain(moved);
      for (let p = 40101; p < 40110; p++) {
        expect(connect(dp, CLIENT, p, VIP)).toBe(moved);
        expect(connect(dp, bClient!, p, VIP_B)).toBe(x);
      }
      // a's established flow to it keeps going (terminating keeps its flows).
      expect(dstOf(testRun(dp.programs.from_container!, frame('tcp', CLIENT, 40000, VIP, 80, 0x10)).dataOut)).toBe(x);
      // Every endpoint terminating: the serving ones make the table, and the matches with it.
      lb.apply('a', sticky('a', VIP, aBackends.map((b) => ({ ...b, terminating: true }))));
      expect(matched(dp, VIP)).toEqual(aBackends.map(name));
    } finally {
      dp.close();
    }
  });

  it('drift: a deleted match makes its service out of date and is written again; a stale one is removed; the matches go with affinity', () => {
    const { dp, lb } = setup();
    try {
      const svc = sticky('a', VIP, backends(3));
      lb.apply('a', svc);
      const all = () => dp.maps.affinityMatch.entries().map(([k]) => `${k.serviceId}/${k.backendId}`).sort();
      const want = all();
      expect(want).toHaveLength(3);
      expect(lb.prune([['a', svc]])).toMatchObject({ outOfDate: [], removedKeys: [] });
      const [[victim]] = dp.maps.affinityMatch.entries() as [[AffinityMatchKey, unknown]];
      dp.maps.affinityMatch.deleteBatch([victim]);
      expect(lb.prune([['a', svc]]).outOfDate).toEqual(['a']);
      lb.apply('a', svc);
      expect(all()).toEqual(want);
      expect(lb.prune([['a', svc]]).outOfDate).toEqual([]);
      // Stale: a backend the set does not have, a set that does not exist.
      dp.maps.affinityMatch.upsertBatch([[{ serviceId: victim.serviceId, backendId: 999 }, {}], [{ serviceId: 4242, backendId: victim.backendId }, {}]]);
      const r = lb.prune([['a', svc]]);
      expect(r.outOfDate).toEqual([]);
      expect(r.removed).toEqual({ frontends: 0, tables: 0, backends: 0, affinityMatches: 2 });
      expect(r.removedKeys.sort()).toEqual([`affinity match ${victim.serviceId}/999`, `affinity match 4242/${victim.backendId}`].sort());
      expect(all()).toEqual(want);
      // A restarted programmer finds them as they are; a set id it gives out is past every one in the map.
      const again = new LbProgrammer(dp);
      again.seed();
      expect(again.prune([['a', svc]])).toMatchObject({ outOfDate: [], removedKeys: [] });
      // sessionAffinity off: the matches go; on again: the same ones; the service gone: none.
      again.apply('a', simpleService('a', VIP, 80, 'tcp', backends(3)));
      expect(all()).toEqual([]);
      again.apply('a', svc);
      expect(all()).toEqual(want);
      again.applyMany([['a', undefined]]);
      expect(all()).toEqual([]);
    } finally {
      dp.close();
    }
  });
});
