/**
 * LoadBalancer Services without a cloud, with real packets: LB IPAM gives the Service an address from a pool in the
 * underlay's subnet (kubectl shows it as EXTERNAL-IP), an L2 announcement policy makes exactly one node answer ARP
 * for it, and a client namespace on the underlay that is not a node — with no route for the pool, only its connected
 * subnet — reaches the Service by ARP alone. Failover: the announcing node's link cut, another announcer's agent
 * stopped, then a node dying (agent SIGKILL + link cut: its lease has to expire); each time another node takes the
 * address over (gratuitous ARP) and the client is served again. A second
 * Service finds the pool exhausted and says so in a condition. The failover times are printed as figures.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type EtcdServer } from '@sluice/etcd-runner';
import { type KubeSim } from '@sluice/kube-sim';
import { execIn } from '@sluice/netns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLab, type Lab, type LabClient, type LabNode } from '../src/index.ts';
import { startKubeHarness, type KubeHarness } from './kube-harness.ts';
import { backendsAwayFrom, clientGet, clientNeighbour as neighbourOf, l2Holders, linkMac as mac, loadBalancerManifests, pollFor as poll, servedAgainAfter as servedAfter, underlayPoolAddress } from '../src/l2.ts';


let etcd: EtcdServer;
let sim: KubeSim;
let lab: Lab;
let dir: string;
let client: LabClient;
let lbIp: string;
let stoppedAgent: string | undefined;

let kube: KubeHarness;
const kubectl = (...args: string[]) => kube.kubectl(...args);
const apply = async (name: string, yaml: string) => {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, yaml);
  return kubectl('apply', '-f', file);
};

const holders = (ip: string) => l2Holders(lab, ip);
const get = (ip: string, timeoutS = 2) => clientGet(client, ip, timeoutS);
const setBackendsAwayFrom = (nodes: LabNode[]) => backendsAwayFrom(lab, client, 'lb-web', lbIp, nodes);

beforeAll(async () => {
  kube = await startKubeHarness('l2');
  ({ etcd, sim, dir } = kube);
  lab = await startLab({ nodes: 3, podsPerNode: 1, etcdEndpoint: etcd.endpoint, kubeSim: sim, podPrefix: 'l2-', nodePrefix: 'l2-node-', rootPrefix: 'l2/', healthEndpoints: false, healthPort: 0 });
  client = await lab.services.addClient();
}, 240_000);

afterAll(async () => {
  await kube?.stop(lab);
});

describe('LB IPAM and L2 announcements in the lab', () => {
  it('assigns an address from the pool, shown by kubectl; one node announces it and the outside client reaches it by ARP alone', async () => {
    // One address of the underlay's subnet, outside what kube-sim gives nodes (the bottom) and the lab's clients (.250 down).
    lbIp = underlayPoolAddress(lab, sim);
    await apply('lb', loadBalancerManifests(lbIp));
    lab.services.setEndpoints('lb-web', lab.pods().map((pod) => ({ pod })), [{ name: 'http', port: 8080 }]);

    const table = await poll('EXTERNAL-IP', async () => {
      const t = await kubectl('get', 'svc', 'lb-web');
      return t.includes(lbIp) ? t : undefined;
    });
    expect(table).toMatch(new RegExp(`lb-web\\s+LoadBalancer\\s+\\S+\\s+${lbIp.replace(/\./g, '\\.')}\\s+80:\\d+/TCP`));

    // The client knows only its connected subnet: no route for the pool, no default route.
    const routes = (await execIn(client.netns, 'ip', ['-4', 'route', 'show'])).stdout.trim().split('\n');
    expect(routes).toHaveLength(1);
    expect(routes[0]).toMatch(/ dev eth0 proto kernel scope link /);

    const announcer = await poll('one announcer', async () => {
      const h = await holders(lbIp);
      return h.length === 1 ? h[0] : undefined;
    });
    const names = lab.pods().map((p) => p.name);
    const body = await poll('the client to be served', async () => get(lbIp));
    expect(names).toContain(body);
    expect(await neighbourOf(client, lbIp)).toBe(await mac(announcer.netns, 'eth0'));
    expect(await holders(lbIp)).toEqual([announcer]);
  });

  it('fails over when the announcing node is cut off: another node takes the address and the client is served again', async () => {
    const first = (await holders(lbIp))[0]!;
    const names = await setBackendsAwayFrom([first]);
    const start = Date.now();
    await lab.cutLink(first.name);
    const ms = await servedAfter(client, start, lbIp, names, 20_000);
    expect(ms, 'served again after the link cut').toBeDefined();
    console.log(`[figure] L2 failover after the announcer's link was cut: served again after ${ms} ms`);
    const now = await poll('the cut node to withdraw', async () => {
      const h = await holders(lbIp);
      return h.length === 1 && h[0]!.name !== first.name ? h[0] : undefined;
    });
    expect(await neighbourOf(client, lbIp)).toBe(await mac(now.netns, 'eth0'));
    // The link comes back: the address stays where it is (no flapping back), still one announcer.
    await lab.restoreLink(first.name);
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await holders(lbIp)).toEqual([now]);
    expect(names).toContain(await get(lbIp));
  });

  it('fails over when the announcing agent stops', async () => {
    const current = (await holders(lbIp))[0]!;
    const names = await setBackendsAwayFrom([current]);
    const start = Date.now();
    await lab.killAgent(current.name, 'SIGTERM');
    stoppedAgent = current.name;
    const ms = await servedAfter(client, start, lbIp, names, 20_000);
    expect(ms, 'served again after the agent stopped').toBeDefined();
    console.log(`[figure] L2 failover after the announcing agent stopped: served again after ${ms} ms`);
    const next = await poll('another announcer', async () => {
      const h = await holders(lbIp);
      return h.length === 1 && h[0]!.name !== current.name ? h[0] : undefined;
    });
    expect(await neighbourOf(client, lbIp)).toBe(await mac(next.netns, 'eth0'));
  });

  it('fails over when the announcing node dies (agent killed, link cut): its lease expires and another node takes over', async () => {
    // Every agent runs again (the previous test stopped one).
    if (stoppedAgent) await lab.restartAgent(stoppedAgent);
    const current = (await holders(lbIp))[0]!;
    const names = await setBackendsAwayFrom([current]);
    const start = Date.now();
    await lab.killAgent(current.name, 'SIGKILL');
    await lab.cutLink(current.name);
    const ms = await servedAfter(client, start, lbIp, names, 20_000);
    expect(ms, 'served again after the announcing node died').toBeDefined();
    console.log(`[figure] L2 failover after the announcing node died (SIGKILL + link cut, 2 s lease TTL): served again after ${ms} ms`);
    const next = await poll('another announcer', async () => {
      const h = (await holders(lbIp)).filter((n) => n.name !== current.name);
      return h.length === 1 ? h[0] : undefined;
    });
    expect(await neighbourOf(client, lbIp)).toBe(await mac(next.netns, 'eth0'));
    // The node comes back: its new agent removes the entry the killed one left (its first full pass), one announcer.
    await lab.restoreLink(current.name);
    await lab.restartAgent(current.name);
    await poll('the stale entry pruned', async () => ((await holders(lbIp)).length === 1 ? true : undefined));
    expect(await holders(lbIp)).toEqual([next]);
  });

  it('keeps announcing while etcd is unreachable for longer than the lease TTL, and ends with one announcer', async () => {
    const before = await holders(lbIp);
    expect(before).toHaveLength(1);
    const names = lab.pods().map((p) => p.name);
    lab.services.setEndpoints('lb-web', lab.pods().map((pod) => ({ pod })), [{ name: 'http', port: 8080 }]);
    await poll('served', async () => get(lbIp));
    await etcd.pause();
    const failures: number[] = [];
    try {
      const until = Date.now() + 6_000; // three TTLs
      while (Date.now() < until) {
        const body = await get(lbIp, 1);
        if (!body || !names.includes(body)) failures.push(Date.now());
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      await etcd.resume();
    }
    expect(failures).toEqual([]);
    expect(await holders(lbIp)).toEqual(before);
    // etcd back: the leases are taken again; one node announces (the same one, or another that won the race).
    await new Promise((r) => setTimeout(r, 4_000));
    expect(await holders(lbIp)).toHaveLength(1);
    expect(names).toContain(await get(lbIp));
  });

  it('a Service the exhausted pool cannot serve gets a clear condition and stays <pending>', async () => {
    await apply('svc2', `apiVersion: v1\nkind: Service\nmetadata: {name: lb-two, namespace: default}\nspec:\n  type: LoadBalancer\n  ports: [{name: http, port: 80, targetPort: http, protocol: TCP}]\n`);
    const condition = await poll('the PoolExhausted condition', async () => {
      const svc = JSON.parse(await kubectl('get', 'svc', 'lb-two', '-o', 'json'));
      return (svc.status?.conditions ?? []).find((c: { type: string; reason: string }) => c.type === 'sluice.io/lb-ipam-request-satisfied' && c.reason === 'PoolExhausted');
    });
    expect(condition).toMatchObject({ status: 'False', message: expect.stringContaining('underlay') });
    expect(await kubectl('get', 'svc', 'lb-two')).toMatch(/lb-two\s+LoadBalancer\s+\S+\s+<pending>/);
    await kubectl('delete', 'svc', 'lb-two');
  });
});
