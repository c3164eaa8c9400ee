/**
 * L2 announcements in the lab, seen from outside the agents: which node answers ARP for an address (its proxy
 * neighbour entry), what the client's neighbour table says, and how long a client waits to be served again.
 * Shared by the lab test and the l2-failover benchmark.
 */
import { execIn } from '@sluice/netns';
import type { KubeSim } from '@sluice/kube-sim';
import type { Lab, LabNode } from './lab.ts';
import type { LabClient } from './services.ts';

/** An address of the underlay's subnet for LoadBalancer pools: above what kube-sim gives nodes, below the lab's clients (.250 down). */
export function underlayPoolAddress(lab: Lab, sim: KubeSim, last = 240): string {
  const [a, b, c] = lab.nodes[0]!.ip.split('.');
  const bits = Number(sim.cluster.options.nodeIPCIDR.split('/')[1]);
  return bits <= 16 ? `${a}.${b}.255.${last}` : `${a}.${b}.${c}.${last}`;
}

/** Nodes that answer ARP for the address: a proxy neighbour entry on their uplink (what the announcer adds). */
export async function l2Holders(lab: Lab, ip: string): Promise<LabNode[]> {
  const out: LabNode[] = [];
  for (const n of lab.nodes) {
    const r = await execIn(n.netns, 'ip', ['neigh', 'show', 'proxy', 'dev', 'eth0']);
    if (r.stdout.split('\n').some((line) => line.split(' ')[0] === ip)) out.push(n);
  }
  return out;
}

export async function linkMac(netns: string, dev: string): Promise<string> {
  const r = await execIn(netns, 'ip', ['-j', 'link', 'show', 'dev', dev]);
  return (JSON.parse(r.stdout) as Array<{ address: string }>)[0]!.address;
}

/** The MAC the client's neighbour table has for the address (undefined while unresolved). */
export async function clientNeighbour(client: LabClient, ip: string): Promise<string | undefined> {
  const r = await execIn(client.netns, 'ip', ['-j', 'neigh', 'show', ip, 'dev', 'eth0']);
  const entries = JSON.parse(r.stdout || '[]') as Array<{ lladdr?: string; state?: string[] }>;
  return entries.find((e) => e.lladdr && !(e.state ?? []).includes('FAILED'))?.lladdr;
}

/** The body of `http://<ip>:<port>/` from the client, or undefined when it does not answer in time. */
export async function clientGet(client: LabClient, ip: string, timeoutS = 2, port = 80): Promise<string | undefined> {
  const r = await execIn(client.netns, 'curl', ['-s', '-m', String(timeoutS), `http://${ip}:${port}/`], { timeoutMs: (timeoutS + 5) * 1000 });
  return r.code === 0 ? r.stdout.trim() : undefined;
}

/** Milliseconds from `start` until one of `names` answers the client again (short requests back to back); undefined past `limitMs`. */
export async function servedAgainAfter(client: LabClient, start: number, ip: string, names: readonly string[], limitMs: number): Promise<number | undefined> {
  while (Date.now() - start < limitMs) {
    const body = await clientGet(client, ip, 0.3);
    if (body && names.includes(body)) return Date.now() - start;
  }
  return undefined;
}

export async function pollFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 30_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Points the Service's endpoints at the pods of every node but `away` and waits until the client is served by them
 * only, so that a failover measures the announcement and not a backend lost with its node.
 */
export async function backendsAwayFrom(lab: Lab, client: LabClient, service: string, ip: string, away: readonly LabNode[]): Promise<string[]> {
  const skip = new Set(away.map((n) => n.name));
  const backends = lab.pods().filter((p) => !skip.has(p.node));
  lab.services.setEndpoints(service, backends.map((pod) => ({ pod })), [{ name: 'http', port: 8080 }]);
  const names = backends.map((p) => p.name);
  await pollFor('the backends to change', async () => {
    for (let i = 0; i < 4; i++) {
      const body = await clientGet(client, ip);
      if (!body || !names.includes(body)) return undefined;
    }
    return true;
  });
  return names;
}

/** The pool, the policy and a LoadBalancer Service as YAML for kubectl. */
export function loadBalancerManifests(ip: string, service = 'lb-web'): string {
  return [
    `apiVersion: sluice.io/v1alpha1\nkind: SluiceLoadBalancerIPPool\nmetadata: {name: underlay}\nspec:\n  blocks: [{start: ${ip}, stop: ${ip}}]\n`,
    `apiVersion: sluice.io/v1alpha1\nkind: SluiceL2AnnouncementPolicy\nmetadata: {name: underlay}\nspec:\n  interfaces: ['^eth0$']\n  loadBalancerIPs: true\n`,
    `apiVersion: v1\nkind: Service\nmetadata: {name: ${service}, namespace: default}\nspec:\n  type: LoadBalancer\n  ports: [{name: http, port: 80, targetPort: http, protocol: TCP}]\n`,
  ].join('---\n');
}
