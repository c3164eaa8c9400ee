/**
 * The CNI plugin executable, driven the way a runtime drives it (CNI_* environment, config on stdin), against a real
 * agent (in-process runAgent over a node namespace) and real BPF maps.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runAgent, type RunningAgent } from '@sluice/agent';
import { defaultPinDir } from '@sluice/datapath';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { createKvClient, keySchema } from '@sluice/kvstore';
import { NetLab, execIn, linkInfo, ping } from '@sluice/netns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CNI_BINARY, hostIfname } from '../src/index.ts';

interface CniRun {
  code: number;
  stdout: string;
  json: Record<string, unknown>;
}

function cni(env: Record<string, string>, stdin: string): Promise<CniRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(CNI_BINARY, [], { env: { PATH: process.env.PATH ?? '', CNI_PATH: '/opt/cni/bin', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      let json: Record<string, unknown> = {};
      try {
        json = JSON.parse(stdout) as Record<string, unknown>;
      } catch {
        // empty output (DEL, CHECK)
      }
      resolve({ code: code ?? 1, stdout, json });
    });
    child.stdin.end(stdin);
  });
}

const lab = new NetLab();
let etcd: EtcdServer;
let agent: RunningAgent;
let nodeNs: string;
let stateDir: string;
let config: Record<string, unknown>;
const pods: string[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
  stateDir = mkdtempSync(join(tmpdir(), 'sluice-cni-test-'));
  nodeNs = await lab.addNetns(lab.name('node'), { forwarding: true });
  const peer = await lab.addNetns(lab.name('peer'));
  // A jumbo uplink: pods get its MTU in native routing (not the kernel's 1500).
  await lab.addVeth({ ns: nodeNs, name: 'eth0', mtu: 9000 }, { ns: peer, name: 'eth0', mtu: 9000 });
  await lab.addAddr(nodeNs, 'eth0', '192.168.201.1/24');
  for (let i = 0; i < 4; i++) pods.push(await lab.addNetns(lab.name(`p${i}`)));
  const pinDir = lab.trackPinDir(defaultPinDir(`${lab.id}-node`));
  // The node's record (what the operator would write): the agent takes registrations only inside its podCIDR.
  const writer = createKvClient({ endpoints: [etcd.endpoint] });
  try {
    await writer.put(keySchema(`cni-${lab.id}/`).node('cni-node')).value(JSON.stringify({
      v: 1, name: 'cni-node', labels: {}, addresses: [{ type: 'InternalIP', ip: '192.168.201.1' }], podCIDRs: ['10.201.0.0/24'], ready: 'True', healthIPs: [],
    }));
  } finally {
    writer.close();
  }
  agent = await runAgent({
    nodeName: 'cni-node', etcd: [etcd.endpoint], rootPrefix: `cni-${lab.id}/`, pinDir, netns: nodeNs, uplink: 'eth0',
    routing: 'native', hostRouting: 'auto', stateDir, apiSocket: join(stateDir, 'agent.sock'), healthPort: 0, clusterCidr: '10.201.0.0/16',
  });
  await agent.core.synced();
  config = { cniVersion: '1.0.0', name: 'sluice', type: 'sluice-cni', agentSocket: join(stateDir, 'agent.sock'), nodeNetns: nodeNs, ipam: { dataDir: join(stateDir, 'ipam'), subnet: '10.201.0.0/24' } };
});

afterAll(async () => {
  await agent?.stop();
  await lab.cleanup();
  await etcd?.stop();
  if (stateDir) rmSync(stateDir, { recursive: true, force: true });
});

const env = (command: string, pod: number, extra: Record<string, string> = {}) => ({
  CNI_COMMAND: command, CNI_CONTAINERID: `ctr-${lab.id}-${pod}`, CNI_NETNS: `/run/netns/${pods[pod]}`, CNI_IFNAME: 'eth0', CNI_ARGS: `K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-${pod}`, ...extra,
});

describe('sluice-cni', () => {
  it('VERSION lists the supported versions', async () => {
    const r = await cni({ CNI_COMMAND: 'VERSION' }, '');
    expect(r.code).toBe(0);
    expect(r.json).toEqual({ cniVersion: '1.0.0', supportedVersions: ['0.4.0', '1.0.0'] });
  });

  it('ADD creates the veth pair, assigns an IP, sets routes and neighbour, programs the endpoint at once', async () => {
    const r = await cni(env('ADD', 0), JSON.stringify(config));
    expect(r.code, r.stdout).toBe(0);
    const ips = r.json.ips as Array<{ address: string; gateway: string }>;
    expect(ips[0]).toMatchObject({ address: '10.201.0.2/32', gateway: '169.254.1.1' });
    const host = hostIfname(`ctr-${lab.id}-0`, 'eth0');
    expect((r.json.interfaces as Array<{ name: string }>).map((i) => i.name)).toEqual([host, 'eth0']);
    const hostLink = await linkInfo(nodeNs, host);
    const podLink = await linkInfo(pods[0], 'eth0');
    expect((await execIn(pods[0]!, 'ip', ['-4', 'addr', 'show', 'dev', 'eth0'])).stdout).toContain('10.201.0.2/32');
    expect((await execIn(pods[0]!, 'ip', ['route'])).stdout).toContain('default via 169.254.1.1 dev eth0');
    expect((await execIn(pods[0]!, 'ip', ['neigh', 'show', '169.254.1.1'])).stdout).toContain(hostLink.mac);
    expect((await execIn(nodeNs, 'ip', ['route', 'show', '10.201.0.2'])).stdout).toContain(`dev ${host}`);
    expect(agent.datapath.maps.endpoints.lookup({ ip: '10.201.0.2' })).toEqual({ ifindex: hostLink.ifindex, flags: 0, mac: podLink.mac, nodeMac: hostLink.mac });
    // Native routing: the uplink's MTU on both ends of the pair.
    expect([hostLink.mtu, podLink.mtu]).toEqual([9000, 9000]);
    // The pod programs are attached to the host-side veth.
    expect((await execIn(nodeNs, 'tc', ['filter', 'show', 'dev', host, 'ingress'])).stdout).toContain('from_container');
    // Persisted for the agent's restart.
    expect(readFileSync(join(stateDir, 'endpoints.json'), 'utf8')).toContain('10.201.0.2');
  });

  it('a retried ADD keeps the IP; another container gets another IP; pods on the node reach each other', async () => {
    const again = await cni(env('ADD', 0), JSON.stringify(config));
    expect(again.code, again.stdout).toBe(0);
    expect((again.json.ips as Array<{ address: string }>)[0]!.address).toBe('10.201.0.2/32');
    const second = await cni(env('ADD', 1), JSON.stringify(config));
    expect(second.code, second.stdout).toBe(0);
    expect((second.json.ips as Array<{ address: string }>)[0]!.address).toBe('10.201.0.3/32');
    expect(await ping(pods[0]!, '10.201.0.3', { count: 2 })).toBe(true);
  });

  it('CHECK passes for a set-up container and fails for an unknown one', async () => {
    const ok = await cni(env('CHECK', 0), JSON.stringify(config));
    expect(ok.code, ok.stdout).toBe(0);
    const unknown = await cni(env('CHECK', 2), JSON.stringify(config));
    expect(unknown.code).not.toBe(0);
    expect(unknown.json).toMatchObject({ cniVersion: '1.0.0', code: 3 });
  });

  it('DEL removes the veth, the endpoint and the IP allocation, and is idempotent', async () => {
    const host = hostIfname(`ctr-${lab.id}-1`, 'eth0');
    const del = await cni(env('DEL', 1), JSON.stringify(config));
    expect(del.code, del.stdout).toBe(0);
    expect((await execIn(nodeNs, 'ip', ['link', 'show', host])).code).not.toBe(0);
    expect(agent.datapath.maps.endpoints.lookup({ ip: '10.201.0.3' })).toBeUndefined();
    expect(readFileSync(join(stateDir, 'ipam', 'allocations.json'), 'utf8')).not.toContain('10.201.0.3');
    const again = await cni(env('DEL', 1), JSON.stringify(config));
    expect(again.code, again.stdout).toBe(0);
    // The released address is not handed out again at once (round robin), and never while allocated.
    const next = await cni(env('ADD', 2), JSON.stringify(config));
    expect((next.json.ips as Array<{ address: string }>)[0]!.address).toBe('10.201.0.4/32');
  });

  it('bad input gets the CNI error JSON and a non-zero exit', async () => {
    const cases: Array<[Record<string, string>, string, number]> = [
      [{ CNI_COMMAND: 'FROB' }, JSON.stringify(config), 4],
      [{ ...env('ADD', 2), CNI_CONTAINERID: '' }, JSON.stringify(config), 4],
      [{ ...env('ADD', 2), CNI_NETNS: '' }, JSON.stringify(config), 4],
      [{ ...env('ADD', 2), CNI_ARGS: 'garbage' }, JSON.stringify(config), 4],
      [env('ADD', 2), '{not json', 6],
      [env('ADD', 2), JSON.stringify({ ...config, cniVersion: '9.9.9' }), 1],
      [env('ADD', 2), JSON.stringify({ ...config, agentSocket: undefined }), 7],
      [env('ADD', 2), JSON.stringify({ ...config, name: '' }), 7],
      [env('ADD', 2), JSON.stringify({ ...config, agentSocket: join(stateDir, 'nobody.sock') }), 11],
      [env('ADD', 2), JSON.stringify({ ...config, ipam: { dataDir: join(stateDir, 'ipam2'), subnet: '10.1.2.3/99' } }), 7],
    ];
    for (const [e, stdin, code] of cases) {
      const r = await cni(e, stdin);
      expect(r.code, `${JSON.stringify(e)} ${stdin}`).not.toBe(0);
      expect(r.json, r.stdout).toMatchObject({ code, msg: expect.any(String) });
      expect(typeof r.json.cniVersion).toBe('string');
    }
    expect(existsSync(join(stateDir, 'ipam2', 'allocations.json'))).toBe(false);
  });

  it('the pod MTU follows the uplink for new pods (existing ones keep theirs); the network config\'s mtu overrides it', async () => {
    await execIn(nodeNs, 'ip', ['link', 'set', 'dev', 'eth0', 'mtu', '4000']);
    try {
      const r = await cni(env('ADD', 3), JSON.stringify(config));
      expect(r.code, r.stdout).toBe(0);
      expect((await linkInfo(pods[3], 'eth0')).mtu).toBe(4000);
      expect((await linkInfo(nodeNs, hostIfname(`ctr-${lab.id}-3`, 'eth0'))).mtu).toBe(4000);
      expect((await linkInfo(pods[0], 'eth0')).mtu).toBe(9000);
      const fixed = await cni(env('ADD', 3), JSON.stringify({ ...config, mtu: 1400 }));
      expect(fixed.code, fixed.stdout).toBe(0);
      expect((await linkInfo(pods[3], 'eth0')).mtu).toBe(1400);
    } finally {
      await execIn(nodeNs, 'ip', ['link', 'set', 'dev', 'eth0', 'mtu', '9000']);
      await cni(env('DEL', 3), JSON.stringify(config));
    }
  });
});
