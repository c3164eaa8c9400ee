/**
 * Two "nodes" (network namespaces) on an underlay bridge (its own namespace), each with two pod namespaces on
 * veth pairs, the Sluice programs attached and the maps programmed straight from the test — no agent.
 */
import { IPCACHE_F_LOCAL, type NodeConfig } from '@sluice/bpf';
import { NetLab, linkInfo } from '@sluice/netns';
import { attachNode, attachPod, attachTcInNetns, defaultPinDir, loadDatapath, upsertIpcache, type Datapath } from '../src/index.ts';

export interface Pod {
  name: string;
  ns: string;
  ip: string;
  hostIf: string;
  hostIfindex: number;
  mac: string;
  hostMac: string;
}

export interface Node {
  name: string;
  ns: string;
  ip: string;
  podCidr: string;
  pods: Pod[];
  dp: Datapath;
  uplinkIfindex: number;
  uplinkMac: string;
  vxIfindex: number;
}

export const GATEWAY = '169.254.1.1';
export const VNI = 42;

export async function buildTopology(lab: NetLab, nodeCount = 2, podsPerNode = 2): Promise<Node[]> {
  const underlay = await lab.addNetns(lab.name('u'));
  await lab.addBridge(underlay, 'br0', { mtu: 9000 });
  const nodes: Node[] = [];
  for (let n = 1; n <= nodeCount; n++) {
    const ns = await lab.addNetns(lab.name(`n${n}`), { forwarding: true });
    const ip = `192.168.77.${n}`;
    await lab.addVeth({ ns: underlay, name: `u${n}`, mtu: 9000 }, { ns, name: 'eth0', mtu: 9000 });
    await lab.setMaster(underlay, `u${n}`, 'br0');
    await lab.addAddr(ns, 'eth0', `${ip}/24`);
    await lab.addVxlan(ns, 'vx0', { mtu: 1500 });
    const uplink = await linkInfo(ns, 'eth0');
    const vx = await linkInfo(ns, 'vx0');
    const pinDir = lab.trackPinDir(defaultPinDir(ns));
    const dp = loadDatapath({ pinDir });
    lab.defer(`close datapath ${ns}`, () => dp.close());
    const node: Node = { name: `n${n}`, ns, ip, podCidr: `10.1.${n}.0/24`, pods: [], dp, uplinkIfindex: uplink.ifindex, uplinkMac: uplink.mac, vxIfindex: vx.ifindex };
    attachNode(dp, { uplink: 'eth0', vxlan: 'vx0' }, ns);
    for (let p = 1; p <= podsPerNode; p++) {
      const podNs = await lab.addNetns(lab.name(`p${n}${p}`));
      const hostIf = `lxc${n}${p}`;
      const podIp = `10.1.${n}.${10 + p}`;
      await lab.addVeth({ ns, name: hostIf }, { ns: podNs, name: 'eth0' });
      const host = await linkInfo(ns, hostIf);
      const inPod = await linkInfo(podNs, 'eth0');
      await lab.addAddr(podNs, 'eth0', `${podIp}/32`);
      await lab.route(podNs, [GATEWAY, 'dev', 'eth0', 'scope', 'link']);
      await lab.route(podNs, ['default', 'via', GATEWAY, 'dev', 'eth0']);
      await lab.neigh(podNs, GATEWAY, host.mac, 'eth0');
      // The route legacy host routing needs; BPF host routing never looks at it.
      await lab.route(ns, [`${podIp}/32`, 'dev', hostIf, 'scope', 'link']);
      // The second pod the way a CNI plugin would: by the pinned program's path.
      if (p === 1) {
        attachTcInNetns(ns, hostIf, 'ingress', dp.programs.from_container!);
        attachTcInNetns(ns, hostIf, 'egress', dp.programs.to_container!);
      } else {
        attachPod(pinDir, hostIf, ns);
      }
      node.pods.push({ name: `p${n}${p}`, ns: podNs, ip: podIp, hostIf, hostIfindex: host.ifindex, mac: inPod.mac, hostMac: host.mac });
    }
    nodes.push(node);
  }
  return nodes;
}

/** Programs every node's maps for the whole cluster (endpoints, ipcache, tunnel map). */
export function programMaps(nodes: Node[]): void {
  for (const node of nodes) {
    node.dp.maps.endpoints.upsertBatch(node.pods.map((p) => [{ ip: p.ip }, { ifindex: p.hostIfindex, flags: 0, mac: p.mac, nodeMac: p.hostMac }] as const));
    const ipcache = nodes.flatMap((owner) => [
      [{ cidr: owner.podCidr }, { nodeIp: owner.ip, flags: owner === node ? IPCACHE_F_LOCAL : 0 }] as const,
      ...owner.pods.map((p) => [{ cidr: `${p.ip}/32` }, { nodeIp: owner.ip, flags: owner === node ? IPCACHE_F_LOCAL : 0 }] as const),
    ]);
    upsertIpcache(node.dp, ipcache);
    node.dp.maps.tunnel.upsertBatch(nodes.filter((o) => o !== node).map((o) => [{ cidr: o.podCidr }, { nodeIp: o.ip, vni: 0 }] as const));
  }
}

/** Switches every node to a routing mode: config map flags plus the kernel routes to the other nodes' podCIDRs. */
export async function setMode(lab: NetLab, nodes: Node[], mode: { bpfHostRouting: boolean; tunnel: boolean }): Promise<void> {
  for (const node of nodes) {
    const config: NodeConfig = {
      bpfHostRouting: mode.bpfHostRouting,
      tunnel: mode.tunnel,
      nodeIp: node.ip,
      uplinkIfindex: node.uplinkIfindex,
      tunnelIfindex: node.vxIfindex,
      vni: VNI,
      uplinkMac: node.uplinkMac,
    };
    node.dp.setConfig(config);
    for (const other of nodes) {
      if (other === node) continue;
      // Native routing: like autoDirectNodeRoutes, the podCIDR via the node's underlay IP. Tunnel: into the VXLAN device.
      await lab.route(node.ns, mode.tunnel ? [other.podCidr, 'dev', 'vx0'] : [other.podCidr, 'via', other.ip, 'dev', 'eth0']);
    }
  }
}
