/**
 * One agent partitioned from etcd (its connection goes through a proxy the test cuts; etcd and every other component
 * go on): that node keeps forwarding with what it has programmed, and catches up when the partition heals.
 */
import { writeFileSync } from 'node:fs';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { startKubeSim, type KubeSim } from '@sluice/kube-sim';
import { ETCD_USERS } from '@sluice/kvstore';
import { execIn } from '@sluice/netns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProxy, type CutProxy } from '../../../libs/kvstore/test/proxy.ts';
import { startLab, stopAllLabs, type Lab } from '../src/index.ts';

let etcd: EtcdServer;
let proxy: CutProxy;
let sim: KubeSim;
let lab: Lab;
const ISOLATED = 'part-node-1';

beforeAll(async () => {
  etcd = await startEtcd({ clientCertAuth: true });
  proxy = await startProxy(etcd.endpoint);
  sim = await startKubeSim({ nodes: 0, services: 0 });
  // Every component's own etcd identity, as usual; only the isolated node's agent reaches etcd through the proxy.
  const identities = {
    clientOptions: () => etcd.clientOptions(),
    writeClientConfig(path: string, user?: string) {
      const files = etcd.clientFiles(user);
      const endpoint = user === ETCD_USERS.agent(ISOLATED) ? proxy.endpoint.replace('http://', 'https://') : etcd.endpoint;
      writeFileSync(path, `endpoints:\n  - ${endpoint}\ntrusted-ca-file: ${files.ca}\ncert-file: ${files.cert}\nkey-file: ${files.key}\n`, { mode: 0o600 });
      return path;
    },
  };
  lab = await startLab({ nodes: 2, podsPerNode: 2, routing: 'native', hostRouting: 'bpf', etcdEndpoint: etcd.endpoint, etcd: identities, kubeSim: sim, nodePrefix: 'part-node-', podPrefix: 'part-web-' });
}, 180_000);

afterAll(async () => {
  await lab?.stop();
  stopAllLabs();
  await sim?.close();
  await proxy?.close();
  await etcd?.stop();
});

describe('one agent partitioned from etcd', () => {
  it('keeps forwarding while it cannot reach etcd, and catches up after (a pod made meanwhile becomes reachable from it)', async () => {
    await lab.waitConverged();
    const from = lab.pods().find((p) => p.node === ISOLATED)!;
    const to = lab.pods().find((p) => p.node !== ISOLATED)!;
    proxy.cut();
    const ping = execIn(from.netns, 'ping', ['-n', '-q', '-c', '100', '-i', '0.1', '-W', '1', to.ip], { timeoutMs: 60_000 });
    // Made while the node is cut off: the other node programs it, the isolated one cannot know yet.
    const created = lab.createPod(lab.nodes.find((n) => n.name !== ISOLATED)!.name, 'part-late-pod');
    await new Promise((r) => setTimeout(r, 8_000));
    proxy.restore();
    const r = await ping;
    const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
    expect(Number(m?.[1])).toBe(100);
    expect(Number(m?.[2])).toBe(100);
    const pod = await created; // resolves once every agent, the isolated one included, has programmed it
    expect(await lab.ping(from, pod.ip, { count: 2 })).toBe(true);
    expect(await lab.httpGet(from, pod.ip)).toBe('part-late-pod');
    // It was cut off indeed (its watches had to reconnect), and the other node was not.
    const retries = async (name: string) => ((await (await fetch(`${lab.node(name).statusUrl}/status`)).json()) as { etcd: { retries: number } }).etcd.retries;
    expect(await retries(ISOLATED)).toBeGreaterThan(0);
    expect(await retries(lab.nodes.find((n) => n.name !== ISOLATED)!.name)).toBe(0);
  }, 120_000);
});
