/**
 * XDP acceleration in the lab in all three modes, with real packets from a client on the underlay that is not a
 * node: --lb-acceleration native (driver mode on the nodes' veth uplinks), generic, and disabled give the same
 * answers for NodePort (TCP, UDP) through either node and for a LoadBalancer IP (LB IPAM + L2 announcement, reached
 * by ARP alone), XDP forwards what it should (its counter moves in both XDP modes, not when disabled), the kernel
 * reports the program in the mode asked for, and `sluice status --verbose` says `XDP Acceleration: Native`,
 * `Generic` or `Disabled`.
 *
 * Native XDP on a veth needs what the lab's defaults do not give, set up here inside the lab's namespaces:
 * - the peer's MTU within a page (the lab's 9000-byte underlay is too large for a program without multi-buffer
 *   support: the kernel refuses with ERANGE and the agent falls back to generic), so each uplink pair runs at 1500;
 * - an XDP program on the peer (the underlay's side of each uplink, a bare XDP_PASS): veth delivers the frames
 *   xdp_netdev sends back out with XDP_TX only to a peer with one (GRO alone turns on its NAPI, but veth does not
 *   wake it after XDP_TX);
 * - complete checksums from the client (TX checksumming off): a veth sender leaves TCP/UDP checksums partial as
 *   skb metadata, which an XDP_TX frame no longer carries. Anything off a real wire has complete checksums.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ifindex, inNetns, openPinnedMaps, queryXdp, setOffloadInNetns } from '@sluice/datapath';
import { type EtcdServer } from '@sluice/etcd-runner';
import { type KubeSim } from '@sluice/kube-sim';
import { execIn } from '@sluice/netns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../../services/cli/src/cli.ts';
import { startLab, type Lab, type LabClient, type LabNode, type LabPod } from '../src/index.ts';
import { startKubeHarness, type KubeHarness } from './kube-harness.ts';
import { clientGet, l2Holders, loadBalancerManifests, pollFor, underlayPoolAddress } from '../src/l2.ts';

const ROOT = 'xdp/';
const UDP_PORT = 5353;
const UDP_SERVER = `
const name = process.argv[1];
const u = require('node:dgram').createSocket('udp4');
u.on('message', (m, r) => u.send(name + ' ' + m, r.port, r.address));
u.bind(${UDP_PORT}, () => console.log('ready'));
`;
const UDP_CLIENT = `
const s = require('node:dgram').createSocket('udp4');
const [host, port] = process.argv.slice(1);
const t = setTimeout(() => { console.log('timeout'); process.exit(1); }, 3000);
s.on('message', (m) => { clearTimeout(t); console.log(String(m)); process.exit(0); });
s.send('hello', Number(port), host);
`;
const XDP_PASS_SOURCE = '#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\nSEC("xdp") int pass(struct xdp_md *ctx) { return XDP_PASS; }\nchar LICENSE[] SEC("license") = "GPL";\n';
const run = promisify(execFile);

type Mode = 'native' | 'generic' | 'disabled';
const STATUS_TEXT: Record<Mode, string> = { native: 'Native', generic: 'Generic', disabled: 'Disabled' };

let etcd: EtcdServer;
let sim: KubeSim;
let lab: Lab;
let dir: string;
let client: LabClient;
let lbIp: string;
/** What every agent gets as --lb-acceleration at its next (re)start. */
let mode: Mode = 'disabled';
const answers: Partial<Record<Mode, Record<string, string>>> = {};

let kube: KubeHarness;
const kubectl = (...args: string[]) => kube.kubectl(...args);

beforeAll(async () => {
  kube = await startKubeHarness('xdp');
  ({ etcd, sim, dir } = kube);
  lab = await startLab({
    nodes: 2, podsPerNode: 1, etcdEndpoint: etcd.endpoint, kubeSim: sim, routing: 'native', hostRouting: 'bpf', podPrefix: 'xdp-', nodePrefix: 'xdp-node-', rootPrefix: ROOT,
    healthEndpoints: false, healthPort: 0, nodeAgentArgs: () => ['--lb-acceleration', mode],
  });
  writeFileSync(join(dir, 'pass.bpf.c'), XDP_PASS_SOURCE);
  const multiarch = (await run('clang', ['-print-multiarch'])).stdout.trim();
  await run('clang', ['-O2', '-target', 'bpf', `-I/usr/include/${multiarch}`, '-c', join(dir, 'pass.bpf.c'), '-o', join(dir, 'pass.bpf.o')]);
  for (const n of lab.nodes) {
    await mustIn(n.netns, 'ip', ['link', 'set', 'eth0', 'mtu', '1500']);
    await mustIn(lab.underlay, 'ip', ['link', 'set', n.underlayIf, 'mtu', '1500']);
    await mustIn(lab.underlay, 'ip', ['link', 'set', 'dev', n.underlayIf, 'xdpdrv', 'obj', join(dir, 'pass.bpf.o'), 'sec', 'xdp']);
  }
  await Promise.all(
    lab.pods().map(
      (pod) =>
        new Promise<void>((resolve, reject) => {
          const child = lab.services.spawnIn(pod.netns, process.execPath, ['-e', UDP_SERVER, pod.name]);
          child.stdout!.once('data', () => resolve());
          child.once('exit', (code) => reject(new Error(`UDP server in ${pod.name} exited (${code})`)));
        }),
    ),
  );
  client = await lab.services.addClient();
  setOffloadInNetns(client.netns, 'eth0', 'tx-checksumming', false);

  // NodePort with its one backend on node 1: through node 2 the backend is remote (XDP's case), through node 1 local.
  lab.services.apply({ name: 'xdp-np', type: 'NodePort', clusterIP: '10.96.210.10', ports: [{ name: 'http', port: 80, targetPort: 'http', nodePort: 30080 }, { name: 'dns', port: 53, targetPort: 'dns', protocol: 'UDP', nodePort: 30053 }] });
  lab.services.setEndpoints('xdp-np', [{ pod: podOn(lab.nodes[0]!) }], [{ name: 'http', port: 8080 }, { name: 'dns', port: UDP_PORT, protocol: 'UDP' }]);
  await lab.services.waitFrontend({ vip: '0.0.0.0', port: 30080, proto: 'tcp' }, (v) => v.count === 1);
  await lab.services.waitFrontend({ vip: '0.0.0.0', port: 30053, proto: 'udp' }, (v) => v.count === 1);
  lbIp = underlayPoolAddress(lab, sim);
  writeFileSync(join(dir, 'lb.yaml'), loadBalancerManifests(lbIp));
  await kubectl('apply', '-f', join(dir, 'lb.yaml'));
  await pollFor('the LoadBalancer IP', async () => ((await kubectl('get', 'svc', 'lb-web')).includes(lbIp) ? true : undefined));
}, 300_000);

afterAll(async () => {
  await kube?.stop(lab);
});

async function mustIn(netns: string, cmd: string, args: string[]): Promise<void> {
  const r = await execIn(netns, cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} in ${netns}: ${r.stderr.trim()}`);
}

function podOn(node: LabNode): LabPod {
  const pod = lab.pods().find((p) => p.node === node.name);
  if (!pod) throw new Error(`no pod on ${node.name}`);
  return pod;
}

const xdpFwd = (node: LabNode): bigint => {
  const dp = openPinnedMaps(node.pinDir);
  try {
    return dp.readCounters().xdpFwd.packets;
  } finally {
    dp.close();
  }
};

async function status(): Promise<string> {
  let out = '';
  let err = '';
  const code = await runCli(['status', '--verbose', '--etcd-endpoints', etcd.endpoint, '--etcd-prefix', ROOT, '--kubeconfig', sim.kubeconfigPath], {
    stdout: (t) => void (out += t), stderr: (t) => void (err += t), env: { SLUICE_DEMO_STATE: '/nonexistent/demo.json' }, cwd: '/',
  });
  if (code > 1) throw new Error(`sluice status exited ${code}: ${err}`);
  return out;
}

async function udp(host: string, port: number): Promise<string> {
  const r = await execIn(client.netns, process.execPath, ['-e', UDP_CLIENT, host, String(port)], { timeoutMs: 10_000 });
  return r.stdout.trim();
}

/**
 * Restarts every agent with --lb-acceleration `m` and checks what it attached. The LoadBalancer's backend is then
 * moved to the node that does not announce the address (after restarts the announcer may be either), so the
 * announcing node forwards it to another node: XDP's case.
 */
async function switchTo(m: Mode): Promise<{ announcer: LabNode }> {
  mode = m;
  for (const n of lab.nodes) await lab.restartAgent(n.name);
  for (const n of lab.nodes) {
    const attached = inNetns(n.netns, () => queryXdp(ifindex('eth0')));
    expect(attached?.mode, `${n.name} XDP attachment`).toBe(m === 'disabled' ? undefined : m);
  }
  const announcer = await pollFor('one announcer', async () => {
    const h = await l2Holders(lab, lbIp);
    return h.length === 1 ? h[0] : undefined;
  });
  const backend = podOn(lab.nodes.find((n) => n.name !== announcer.name)!);
  lab.services.setEndpoints('lb-web', [{ pod: backend }], [{ name: 'http', port: 8080 }]);
  await pollFor('the LoadBalancer to be served by its backend', async () => ((await clientGet(client, lbIp)) === backend.name ? true : undefined));
  return { announcer };
}

/** The outside client's answers: NodePort TCP (3 connections) and UDP through each node, the LoadBalancer IP. */
async function ask(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const n of lab.nodes) {
    for (let i = 0; i < 3; i++) out[`nodeport tcp via node ${n.index} #${i}`] = (await clientGet(client, n.ip, 3, 30080)) ?? 'no answer';
    out[`nodeport udp via node ${n.index}`] = await udp(n.ip, 30053);
  }
  for (let i = 0; i < 3; i++) out[`loadbalancer #${i}`] = (await clientGet(client, lbIp, 3)) ?? 'no answer';
  return out;
}

describe('XDP acceleration in the lab: native, generic, disabled', () => {
  for (const m of ['native', 'generic', 'disabled'] as const) {
    it(`--lb-acceleration ${m}: the outside client's NodePort and LoadBalancer answers, XDP forwarding, status says XDP Acceleration: ${STATUS_TEXT[m]}`, async () => {
      const { announcer } = await switchTo(m);
      const text = await pollFor(`status to report ${STATUS_TEXT[m]}`, async () => {
        const t = await status();
        return new RegExp(`^\\s*XDP Acceleration:\\s+${STATUS_TEXT[m]}$`, 'm').test(t) ? t : undefined;
      });
      expect(text).toMatch(/KubeProxyReplacement:\s+True/);

      const remote = lab.nodes[1]!; // NodePort through node 2 reaches node 1's backend
      const before = { remote: xdpFwd(remote), announcer: xdpFwd(announcer) };
      const got = await ask();
      const npBackend = podOn(lab.nodes[0]!).name;
      const lbBackend = podOn(lab.nodes.find((n) => n.name !== announcer.name)!).name;
      const want: Record<string, string> = {};
      for (const n of lab.nodes) {
        for (let i = 0; i < 3; i++) want[`nodeport tcp via node ${n.index} #${i}`] = npBackend;
        want[`nodeport udp via node ${n.index}`] = `${npBackend} hello`;
      }
      for (let i = 0; i < 3; i++) want[`loadbalancer #${i}`] = lbBackend;
      expect(got).toEqual(want);
      // Across modes the LoadBalancer's backend is by role (the announcer may differ after the restarts).
      answers[m] = Object.fromEntries(Object.entries(got).map(([k, v]) => [k, k.startsWith('loadbalancer') && v === lbBackend ? 'the pod away from the announcer' : v]));

      // Forwarded by xdp_netdev itself in both XDP modes (the node after the client's packets, before the stack);
      // the same answers when disabled came from tc alone.
      const moved = { remote: xdpFwd(remote) - before.remote, announcer: xdpFwd(announcer) - before.announcer };
      if (m === 'disabled') expect(moved).toEqual({ remote: 0n, announcer: 0n });
      else {
        expect(moved.remote, 'NodePort packets XDP forwarded through node 2').toBeGreaterThan(0n);
        expect(moved.announcer, 'LoadBalancer packets XDP forwarded by the announcer').toBeGreaterThan(0n);
      }
    }, 240_000);
  }

  it('gives the same answers in all three modes', () => {
    expect(answers.native).toBeDefined();
    expect(answers.native).toEqual(answers.disabled);
    expect(answers.generic).toEqual(answers.disabled);
  });
});
