/**
 * The order of a live switch (reconcilers/datapath-mode.ts): the new path is in place before the old one goes —
 * into iptables masquerading the rules first, then the BPF SNAT off; out of it the BPF SNAT first, then the rules
 * removed — and the host routing fallback reason is logged once per change of reason, not per record.
 */
import { Writable } from 'node:stream';
import type { Datapath, KernelFeatures } from '@sluice/datapath';

type NodeConfig = Parameters<Datapath['setConfig']>[0];
import { createLogger } from '@sluice/log';
import { describe, expect, it } from 'vitest';
import { DatapathMode } from '../src/reconcilers/datapath-mode.ts';
import type { IptablesMasquerade } from '../src/reconcilers/iptables.ts';
import type { MasqueradeMode } from '../src/tables/masquerade.ts';

const features = { redirectPeer: true, redirectNeigh: true, kernel: 'test', errors: {} } as unknown as KernelFeatures;

describe('DatapathMode', () => {
  it('writes the new path before it removes the old, and logs the fallback reason once', async () => {
    const calls: string[] = [];
    let config = { masquerade: false, bpfHostRouting: false, nodeIp: '192.168.1.1' } as unknown as NodeConfig;
    const datapath = {
      getConfig: () => config,
      setConfig: (c: NodeConfig) => {
        config = c;
        calls.push(`datapath masquerade=${c.masquerade} bpfHostRouting=${c.bpfHostRouting}`);
      },
    };
    let rulesMode: MasqueradeMode = 'iptables';
    const masquerade = {
      get mode() {
        return rulesMode;
      },
      setMode: async (m: MasqueradeMode) => {
        rulesMode = m;
        calls.push(`rules ${m}`);
      },
    } as unknown as IptablesMasquerade;
    const messages: string[] = [];
    const log = createLogger({ component: 'test', level: 'info', destination: new Writable({ write(c: Buffer, _e, done) { for (const l of c.toString().split('\n')) if (l) messages.push((JSON.parse(l) as { msg: string }).msg); done(); } }) });
    const fallback = 'BPF host routing requires enable-bpf-masquerade. Falling back to legacy host routing (enable-host-legacy-routing=true).';
    const mode = new DatapathMode({
      datapath, masquerade, features, uplink: 'eth0', clusterCidr: '10.128.0.0/9', log,
      base: { masquerade: 'iptables', hostRouting: 'auto', routing: 'native' },
      current: { masquerade: 'iptables', hostRouting: { mode: 'Legacy', reason: fallback, status: `Host Routing: Legacy (${fallback})` } },
    });

    await mode.apply({ masquerade: 'bpf' });
    expect(calls).toEqual(['datapath masquerade=true bpfHostRouting=true', 'rules bpf']);
    expect(mode.hostRouting.mode).toBe('BPF');
    expect(mode.masquerading).toBe('BPF [eth0] 10.128.0.0/9 [IPv4: Enabled, IPv6: Disabled]');

    calls.length = 0;
    await mode.apply({ masquerade: 'iptables', sources: ['a'] });
    expect(calls).toEqual(['rules iptables', 'datapath masquerade=false bpfHostRouting=false']);
    expect(mode.hostRouting).toMatchObject({ mode: 'Legacy', reason: fallback });

    // The same result from another record: nothing switches, nothing is logged again.
    calls.length = 0;
    await mode.apply({ masquerade: 'iptables', sources: ['b'] });
    await mode.apply(undefined);
    expect(calls).toEqual([]);
    expect(messages.filter((m) => m.startsWith('BPF host routing requires'))).toEqual([fallback]);
  });
});
