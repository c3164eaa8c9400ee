/** The programs' counters as Prometheus metrics: a packet the masquerade cannot translate is dropped and shows up. */
import { randomBytes } from 'node:crypto';
import { l4Frame, loadDatapath, removePins, TC_ACT_SHOT, testRun } from '@sluice/datapath';
import { createRegistry } from '@sluice/metrics';
import { afterAll, describe, expect, it } from 'vitest';
import { registerDatapathCounters } from '../src/reconcilers/datapath-counters.ts';

const dir = `/sys/fs/bpf/sluice/test-counters-${randomBytes(4).toString('hex')}`;
afterAll(() => removePins(dir));

describe('datapath counters as metrics', () => {
  it('counts the masquerade\'s drops in sluice_datapath_packets_total{decision}', async () => {
    const dp = loadDatapath({ pinDir: dir });
    dp.setConfig({ bpfHostRouting: false, tunnel: false, masquerade: true, nodeIp: '192.168.0.1', uplinkIfindex: 1, tunnelIfindex: 0, vni: 0, uplinkMac: '02:00:00:00:00:01' });
    dp.maps.endpoints.upsertBatch([[{ ip: '10.0.0.1' }, { ifindex: 1, flags: 0, mac: '02:aa:bb:cc:dd:01', nodeMac: '02:11:22:33:44:01' }]]);
    const registry = createRegistry();
    registerDatapathCounters(registry, dp);
    registerDatapathCounters(registry, dp); // a second agent on the same registry: no duplicate metric
    const gre = l4Frame('udp', '10.0.0.1', 1, '203.0.113.7', 2);
    gre[23] = 47; // GRE: nothing the masquerade can translate
    expect(testRun(dp.programs.to_netdev!, gre).retval).toBe(TC_ACT_SHOT);
    const text = await registry.metrics();
    expect(text).toContain('sluice_datapath_packets_total{decision="snatUnsupported"} 1');
    expect(text).toMatch(/sluice_datapath_bytes_total\{decision="snatUnsupported"\} \d+/);
    expect(text).toContain('sluice_datapath_packets_total{decision="toNetdev"} 1');
    dp.close();
  });
});
