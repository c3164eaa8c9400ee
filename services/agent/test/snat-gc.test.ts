/**
 * Garbage collection of the BPF masquerade's NAT table, on mappings the real to_netdev program made
 * (BPF_PROG_TEST_RUN): a flow goes once both directions have been idle past its lifetime, its two halves together;
 * a flow that saw FIN/RST goes after the closing lifetime; a live flow stays whatever the other flows do; a reverse
 * half without its forward half goes once idle, never while it may be a flow being mapped.
 */
import { randomBytes } from 'node:crypto';
import { SNAT_LIFETIME } from '@sluice/bpf';
import { l4Frame, loadDatapath, removePins, testRun, type Datapath } from '@sluice/datapath';
import { createLogger } from '@sluice/log';
import { createRegistry } from '@sluice/metrics';
import { afterAll, describe, expect, it } from 'vitest';
import { collectSnat, startSnatGc } from '../src/reconcilers/snat-gc.ts';
import { monotonicSeconds } from '../src/reconcilers/services.ts';

const NODE_IP = '192.168.0.1';
const POD = '10.0.0.1';
const OUTSIDE = '203.0.113.7';
const pinDirs: string[] = [];
afterAll(() => {
  for (const d of pinDirs) removePins(d);
});

function setup(): Datapath {
  const dir = `/sys/fs/bpf/sluice/test-snatgc-${randomBytes(4).toString('hex')}`;
  pinDirs.push(dir);
  const dp = loadDatapath({ pinDir: dir });
  dp.setConfig({ bpfHostRouting: false, tunnel: false, masquerade: true, nodeIp: NODE_IP, uplinkIfindex: 1, tunnelIfindex: 0, vni: 0, uplinkMac: '02:00:00:00:00:01' });
  dp.maps.endpoints.upsertBatch([[{ ip: POD }, { ifindex: 1, flags: 0, mac: '02:aa:bb:cc:dd:01', nodeMac: '02:11:22:33:44:01' }]]);
  return dp;
}

/** A packet of a pod's flow out of to_netdev (which maps it); returns its NAT port. */
function send(dp: Datapath, proto: 'tcp' | 'udp', sport: number, dport: number, tcpFlags = 0x10): number {
  return testRun(dp.programs.to_netdev!, l4Frame(proto, POD, sport, OUTSIDE, dport, tcpFlags)).dataOut.readUInt16BE(34);
}

const flows = (dp: Datapath) => [dp.maps.snat.count(), dp.maps.snatRev.count()];

describe('BPF masquerade NAT table garbage collection', () => {
  it('removes a flow\'s two halves once idle past its lifetime, closing flows sooner, live ones never', () => {
    const dp = setup();
    const now = monotonicSeconds();
    send(dp, 'tcp', 40000, 80, 0x02); // established (no FIN/RST)
    send(dp, 'tcp', 40001, 80, 0x02);
    send(dp, 'tcp', 40001, 80, 0x11); // … which then closes
    send(dp, 'udp', 5353, 53);
    expect(flows(dp)).toEqual([3, 3]);

    // Just now: nothing is idle.
    expect(collectSnat(dp.maps, now)).toEqual({ flows: 0, orphans: 0 });
    // Past the closing lifetime: the closed TCP flow goes, both halves.
    expect(collectSnat(dp.maps, now + SNAT_LIFETIME.closing + 2)).toEqual({ flows: 1, orphans: 0 });
    expect(dp.maps.snat.lookup({ addr: POD, port: 40001, peerIp: OUTSIDE, peerPort: 80, proto: 'tcp' })).toBeUndefined();
    expect(flows(dp)).toEqual([2, 2]);
    // Past UDP's: the UDP flow.
    expect(collectSnat(dp.maps, now + SNAT_LIFETIME.udp + 2)).toEqual({ flows: 1, orphans: 0 });
    expect(dp.maps.snat.entries().map(([k]) => `${k.proto}:${k.port}`)).toEqual(['tcp:40000']);
    // Past TCP's: the last one.
    expect(collectSnat(dp.maps, now + SNAT_LIFETIME.tcp + 2)).toEqual({ flows: 1, orphans: 0 });
    expect(flows(dp)).toEqual([0, 0]);
  });

  it('keeps a flow whose replies still come even when the pod has been silent (either direction counts)', () => {
    const dp = setup();
    const now = monotonicSeconds();
    const port = send(dp, 'udp', 6000, 53);
    // Only the reverse entry gets fresh: a reply at now + 50 (written as the program would).
    const rk = { addr: NODE_IP, port, peerIp: OUTSIDE, peerPort: 53, proto: 'udp' as const };
    dp.maps.snatRev.upsertBatch([[rk, { ...dp.maps.snatRev.lookup(rk)!, lastSeen: now + 50 }]]);
    expect(collectSnat(dp.maps, now + SNAT_LIFETIME.udp + 2)).toEqual({ flows: 0, orphans: 0 });
    expect(collectSnat(dp.maps, now + 50 + SNAT_LIFETIME.udp + 2)).toEqual({ flows: 1, orphans: 0 });
    expect(flows(dp)).toEqual([0, 0]);
  });

  it('removes a reverse half without its forward half once it is idle, not before', () => {
    const dp = setup();
    const now = monotonicSeconds();
    const live = send(dp, 'tcp', 40000, 80, 0x02);
    dp.maps.snatRev.upsertBatch([[{ addr: NODE_IP, port: 61001, peerIp: OUTSIDE, peerPort: 443, proto: 'tcp' }, { addr: POD, port: 41000, lastSeen: now }]]);
    expect(collectSnat(dp.maps, now + 1)).toEqual({ flows: 0, orphans: 0 });
    expect(collectSnat(dp.maps, now + SNAT_LIFETIME.closing + 2)).toEqual({ flows: 0, orphans: 1 });
    expect(dp.maps.snatRev.entries().map(([k]) => k.port)).toEqual([live]);
  });

  it('runs on a timer and counts what it removed in a metric', async () => {
    const dp = setup();
    const now = monotonicSeconds();
    send(dp, 'udp', 7000, 53);
    // A flow whose last packet is long past: as if it ended a lifetime ago.
    for (const map of [dp.maps.snat, dp.maps.snatRev]) map.upsertBatch(map.entries().map(([k, v]) => [k, { ...v, lastSeen: now - SNAT_LIFETIME.udp - 5 }]));
    const registry = createRegistry();
    const gc = startSnatGc({ maps: dp.maps, log: createLogger({ component: 'test', level: 'silent' }), registry, intervalMs: 50 });
    try {
      const end = Date.now() + 5000;
      while (dp.maps.snat.count() && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
      expect(flows(dp)).toEqual([0, 0]);
      expect(await registry.getSingleMetricAsString('sluice_agent_snat_gc_removed_total')).toContain('sluice_agent_snat_gc_removed_total{kind="flow"} 1');
    } finally {
      gc.stop();
    }
  });
});
