/**
 * `npm run bench -- l2-failover` (root): how long an outside client waits to be served again by a LoadBalancer
 * Service announced over L2 when its announcing node goes: the link cut, the agent stopped (SIGTERM), the node dead
 * (agent SIGKILL + link cut: the 2 s lease must expire). A 3-node lab, a client namespace on the underlay with no
 * route for the pool, requests of 0.3 s back to back; ROUNDS rounds each, median and worst. Goal: ≤ 3 s.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startEtcd } from '@sluice/etcd-runner';
import { startKubeSim } from '@sluice/kube-sim';
import { startLab, stopAllLabs, type Lab, type LabNode } from '../src/index.ts';
import { backendsAwayFrom, clientGet, l2Holders, loadBalancerManifests, pollFor, servedAgainAfter, underlayPoolAddress } from '../src/l2.ts';

interface Figure {
  metric: string;
  value: number;
  unit: string;
}

const ROUNDS = 3;
const CRDS = fileURLToPath(new URL('../../../deploy/crds', import.meta.url));
const run = promisify(execFile);

export default async function l2Failover(): Promise<Figure[]> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-l2-bench-'));
  const etcd = await startEtcd();
  const sim = await startKubeSim({ nodes: 0, services: 0 });
  let lab: Lab | undefined;
  try {
    const kubectl = async (...args: string[]) => (await run('kubectl', ['--kubeconfig', sim.kubeconfigPath, '--cache-dir', join(dir, 'cache'), ...args], { timeout: 30_000 })).stdout;
    await kubectl('apply', '-k', CRDS);
    lab = await startLab({ nodes: 3, podsPerNode: 1, etcdEndpoint: etcd.endpoint, kubeSim: sim, podPrefix: 'l2b-', nodePrefix: 'l2b-node-', rootPrefix: 'l2b/', healthEndpoints: false, healthPort: 0 });
    const l = lab;
    const client = await l.services.addClient();
    const ip = underlayPoolAddress(l, sim);
    writeFileSync(join(dir, 'lb.yaml'), loadBalancerManifests(ip));
    await kubectl('apply', '-f', join(dir, 'lb.yaml'));
    l.services.setEndpoints('lb-web', l.pods().map((pod) => ({ pod })), [{ name: 'http', port: 8080 }]);
    await pollFor('the client to be served', () => clientGet(client, ip), 60_000);
    const holder = () => pollFor('one announcer', async () => { const h = await l2Holders(l, ip); return h.length === 1 ? h[0] : undefined; });

    const measure = async (what: string, go: (n: LabNode) => Promise<void>, after: (n: LabNode) => Promise<void>): Promise<number[]> => {
      const out: number[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        const current = await holder();
        const names = await backendsAwayFrom(l, client, 'lb-web', ip, [current]);
        const start = Date.now();
        await go(current);
        const ms = await servedAgainAfter(client, start, ip, names, 30_000);
        if (ms === undefined) throw new Error(`${what}: not served again within 30 s`);
        out.push(ms / 1000);
        // The next round starts from a settled cluster: another single announcer, the gone node back.
        await pollFor('another announcer', async () => { const h = (await l2Holders(l, ip)).filter((n) => n.name !== current.name); return h.length ? true : undefined; });
        await after(current);
      }
      return out;
    };
    const linkCut = await measure('link cut', (n) => l.cutLink(n.name), (n) => l.restoreLink(n.name));
    const agentStop = await measure('agent stop', (n) => l.killAgent(n.name, 'SIGTERM'), async (n) => { await l.restartAgent(n.name); });
    const nodeDeath = await measure('node death', async (n) => { await l.killAgent(n.name, 'SIGKILL'); await l.cutLink(n.name); }, async (n) => { await l.restoreLink(n.name); await l.restartAgent(n.name); });
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const figures = (name: string, xs: number[]): Figure[] => [
      { metric: `l2_failover_${name}_served_again_median_seconds`, value: median(xs), unit: 's' },
      { metric: `l2_failover_${name}_served_again_max_seconds`, value: Math.max(...xs), unit: 's' },
    ];
    return [...figures('link_cut', linkCut), ...figures('agent_stop', agentStop), ...figures('node_death', nodeDeath), { metric: 'l2_failover_rounds', value: ROUNDS, unit: 'rounds per case' }];
  } finally {
    await lab?.stop().catch(() => undefined);
    stopAllLabs();
    await sim.close();
    await etcd.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
