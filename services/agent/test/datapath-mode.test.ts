/**
 * The order of a live switch (reconcilers/datapath-mode.ts): the new path is in place before the old one goes —
 * into iptables masquerading the rules first, then the BPF SNAT off; out of it the BPF SNAT first, then the rules
 * removed — and the host routing fallback reason is logged once per change of reason, not per record. Routing:
 * into tunnel the VXLAN device's MTU and the flag before the routes move; into native the routes before the flag.
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
      current: { masquerade: 'iptables', hostRouting: { mode: 'Legacy', reason: fallback, status: `Host Routing: Legacy (${fallback})` }, routing: 'native' },
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

  it('switches routing live: into tunnel the device MTU and the flag before the routes, into native the routes first', async () => {
    const calls: string[] = [];
    let config = { masquerade: true, bpfHostRouting: true, tunnel: false, tunnelIfindex: 7, nodeIp: '192.168.1.1' } as unknown as NodeConfig;
    const datapath = {
      getConfig: () => config,
      setConfig: (c: NodeConfig) => {
        config = c;
        calls.push(`flag tunnel=${c.tunnel}`);
      },
    };
    const masquerade = { mode: 'bpf', setMode: async () => undefined } as unknown as IptablesMasquerade;
    let routesMode = 'native';
    const changes: string[] = [];
    const mode = new DatapathMode({
      datapath, masquerade, features, uplink: 'eth0', clusterCidr: '10.128.0.0/9', log: createLogger({ component: 'test', level: 'silent' }),
      base: { masquerade: 'bpf', hostRouting: 'auto', routing: 'native' },
      current: { masquerade: 'bpf', hostRouting: { mode: 'BPF', reason: '', status: 'Host Routing: BPF' }, routing: 'native' },
      routes: {
        setMode: (m) => {
          routesMode = m;
        },
        resync: async () => {
          calls.push(`routes ${routesMode}`);
        },
      },
      alignTunnel: async (m) => {
        calls.push(`vx0 mtu for ${m}`);
      },
      onChange: () => changes.push(mode.routing),
    });

    await mode.apply({ routing: 'tunnel' });
    expect(calls).toEqual(['vx0 mtu for tunnel', 'flag tunnel=true', 'routes tunnel']);
    expect(mode.routing).toBe('tunnel');
    expect(config).toMatchObject({ masquerade: true, bpfHostRouting: true, tunnel: true });

    calls.length = 0;
    await mode.apply({ routing: 'tunnel', masquerade: 'bpf' });
    expect(calls).toEqual([]);

    // No record: back to the base (native), the routes first.
    await mode.apply(undefined);
    expect(calls).toEqual(['routes native', 'flag tunnel=false']);
    expect(mode.routing).toBe('native');
    expect(changes).toEqual(['tunnel', 'native']);
  });
});
