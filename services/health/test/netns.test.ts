/**
 * The lab scenario on namespaces of our own: three "nodes" on one bridge, each running the prober and answering
 * probes; cut one node's link → it is declared unreachable within the documented detection time and
 * WatchClusterHealth streams the change; restore the link → reachable again.
 */
import { fileURLToPath } from 'node:url';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHealthClient, type HealthChange, type HealthClient } from '@sluice/health-api';
import { createLogger } from '@sluice/log';
import { NetLab } from '@sluice/netns';
import { probePlan, type Peer } from '@sluice/prober';
import { Aggregator, startHealthServer, type HealthServer } from '../src/index.ts';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const N = 3;
const lab = new NetLab();
const bridgeNs = lab.name('br');
const socket = `/tmp/${lab.name('health')}.sock`;
const nodes = Array.from({ length: N }, (_, i) => ({
  name: `node-${i + 1}`,
  ns: lab.name(`n${i + 1}`),
  port: `v${i + 1}`,
  hostIP: `10.77.0.${i + 1}`,
  endpointIP: `10.77.0.${101 + i}`,
}));
const peers: Peer[] = nodes.map((n) => ({ name: n.name, hostIP: n.hostIP, agentPort: 4240, endpointIP: n.endpointIP, endpointPort: 4240 }));

let server: HealthServer;
let client: HealthClient;
const changes: HealthChange[] = [];
const watch = new AbortController();

beforeAll(async () => {
  await lab.addNetns(bridgeNs);
  await lab.addBridge(bridgeNs, 'br0');
  for (const n of nodes) {
    await lab.addNetns(n.ns);
    await lab.addVeth({ ns: n.ns, name: 'eth0' }, { ns: bridgeNs, name: n.port });
    await lab.setMaster(bridgeNs, n.port, 'br0');
    await lab.addAddr(n.ns, 'eth0', `${n.hostIP}/24`);
    await lab.addAddr(n.ns, 'eth0', `${n.endpointIP}/24`);
  }
  const aggregator = new Aggregator({ staleMs: 15_000 });
  aggregator.setNodes(nodes.map((n) => ({ name: n.name, hostIP: n.hostIP, endpointIP: n.endpointIP })));
  rmSync(socket, { force: true });
  server = await startHealthServer({ aggregator, address: `unix://${socket}`, insecure: true, logger: createLogger({ component: 'test', level: 'silent' }) });
  client = createHealthClient(`unix://${socket}`);
  for (const n of nodes) {
    const config = { node: n.name, socket, hostIP: n.hostIP, endpointIP: n.endpointIP, port: 4240, peers };
    const child = lab.spawnIn(n.ns, process.execPath, ['--import', 'tsx', `${root}services/health/test/fixtures/node-agent.ts`, JSON.stringify(config)], { cwd: root });
    child.stderr?.on('data', (chunk: Buffer) => process.stderr.write(`[${n.name}] ${chunk}`));
    child.stdout?.resume();
  }
  void (async () => {
    for await (const change of client.watchClusterHealth({ sendInitial: true }, { signal: watch.signal })) changes.push(change);
  })();
});

afterAll(async () => {
  watch.abort();
  client?.close();
  await server?.stop(500);
  await lab.cleanup();
  rmSync(socket, { force: true });
});

const reachability = async (name: string) => (await client.getNodeHealth(name)).reachability;

describe('cross-node reachability in network namespaces', () => {
  it('detects a cut link within the detection time, streams it, and sees the node come back', async () => {
    const plan = probePlan(N);
    // Every node first becomes reachable from the others' probes over ICMP and HTTP, host and endpoint.
    const allPathsUp = async () =>
      (await client.getClusterHealth()).nodes.every(
        (n) => n.reachability === 'REACHABILITY_REACHABLE' && n.host.icmp.ok && n.host.http.ok && n.endpoint.icmp.ok && n.endpoint.http.ok,
      );
    await expect.poll(allPathsUp, { timeout: 30_000, interval: 250 }).toBe(true);
    const healthy = await client.getNodeHealth('node-3');
    expect(healthy.host).toMatchObject({ ip: '10.77.0.3', icmp: { ok: true }, http: { ok: true } });
    expect(healthy.endpoint).toMatchObject({ ip: '10.77.0.103', icmp: { ok: true }, http: { ok: true } });

    const cutAt = Date.now();
    await lab.exec(bridgeNs, 'ip', ['link', 'set', 'v3', 'down']);
    const down = () => changes.find((c) => c.node === 'node-3' && c.current === 'REACHABILITY_UNREACHABLE' && c.timeUnixMs >= cutAt);
    // The bound is the documented worst case (plus a margin for a loaded test machine), not a timing assertion.
    await expect.poll(down, { timeout: plan.detectionMs + 5000, interval: 100 }).toBeDefined();
    process.stderr.write(`node-3 declared unreachable ${down()!.timeUnixMs - cutAt} ms after its link was cut (documented bound ${plan.detectionMs} ms)\n`);
    const view = await client.getClusterHealth();
    expect(view.summary.unreachable).toEqual(['node-3']);
    expect(view.nodes.find((n) => n.name === 'node-3')?.host.icmp).toMatchObject({ ok: false });
    expect(await reachability('node-1')).not.toBe('REACHABILITY_UNREACHABLE');
    expect(await reachability('node-2')).not.toBe('REACHABILITY_UNREACHABLE');

    const restoredAt = Date.now();
    await lab.exec(bridgeNs, 'ip', ['link', 'set', 'v3', 'up']);
    const up = () => changes.find((c) => c.node === 'node-3' && c.previous === 'REACHABILITY_UNREACHABLE' && c.current === 'REACHABILITY_REACHABLE' && c.timeUnixMs >= restoredAt);
    await expect.poll(up, { timeout: plan.detectionMs + 5000, interval: 100 }).toBeDefined();
    expect((await client.getClusterHealth()).summary).toMatchObject({ reachable: N, unreachable: [] });
  });
});
