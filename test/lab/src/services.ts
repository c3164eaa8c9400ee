/**
 * Services in the lab: Services without a selector and EndpointSlices written by hand into kube-sim (so a test
 * decides each endpoint's conditions — ready, serving, terminating — and its named ports), which the operator copies
 * to etcd like any other; a client namespace on the underlay that is not a node; processes in pod namespaces (extra
 * servers and long-lived clients), killed when the lab stops.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import { attachSocketLb, openPinnedMaps } from '@sluice/datapath';
import type { ServiceKey, ServiceValue } from '@sluice/bpf';
import type { KubeSim } from '@sluice/kube-sim';
import { run, type ExecResult, type NetLab } from '@sluice/netns';
import type { LabNode, LabPod } from './lab.ts';

export interface LabServicePort {
  name: string;
  port: number;
  /** A number, or the name of the endpoints' port (resolved through the EndpointSlice's ports). */
  targetPort: number | string;
  protocol?: 'TCP' | 'UDP';
  nodePort?: number;
}

export interface LabServiceSpec {
  name: string;
  type?: 'ClusterIP' | 'NodePort';
  clusterIP: string;
  ports: LabServicePort[];
  externalIPs?: string[];
  externalTrafficPolicy?: 'Cluster' | 'Local';
  internalTrafficPolicy?: 'Cluster' | 'Local';
  sessionAffinity?: 'None' | 'ClientIP';
}

export interface LabEndpoint {
  pod: LabPod;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
}

export interface LabClient {
  netns: string;
  ip: string;
}

export interface LabServices {
  /** Creates or replaces a Service (no selector: its endpoints are what setEndpoints writes). */
  apply(spec: LabServiceSpec): void;
  /** Writes the service's one EndpointSlice: these endpoints, these ports (name → number). */
  setEndpoints(service: string, endpoints: readonly LabEndpoint[], ports: ReadonlyArray<{ name: string; port: number; protocol?: 'TCP' | 'UDP' }>): void;
  delete(service: string): void;
  /** Every node's frontend (vip, port, proto), or undefined where it is not programmed. */
  frontends(key: ServiceKey): Array<ServiceValue | undefined>;
  /** Resolves when every node has the frontend and `ok` accepts each node's value. */
  waitFrontend(key: ServiceKey, ok: (value: ServiceValue, node: LabNode) => boolean, timeoutMs?: number): Promise<void>;
  /** A namespace on the underlay bridge with an address in the nodes' subnet (not a node: no agent, no pods). */
  addClient(): Promise<LabClient>;
  /**
   * Gives a node another address: on its uplink inside its namespace (`device`, in the nodes' subnet) and/or in its
   * kube-sim Node's status (`record`: InternalIP or ExternalIP), as a second NIC address or a cloud's public IP would.
   * An address the lab added is taken away with `removeNodeAddress` (or with the lab).
   */
  addNodeAddress(node: LabNode, ip: string, where: { device?: boolean; record?: 'InternalIP' | 'ExternalIP' }): Promise<void>;
  removeNodeAddress(node: LabNode, ip: string): Promise<void>;
  /** The nodes' subnet prefix length (an address for addNodeAddress's device needs it). */
  readonly nodeSubnetBits: number;
  /** Runs a long-lived process in a namespace; it is killed when the lab stops. */
  spawnIn(netns: string, cmd: string, args: readonly string[]): ChildProcess;
  /**
   * Runs a command as a process of the node itself (its network namespace) inside the node's own cgroup, where the
   * node's socket load balancer (sock4_connect) is attached — a host-namespace client of the node's services.
   */
  hostExec(node: LabNode, cmd: string, args: readonly string[], options?: { timeoutMs?: number }): Promise<ExecResult>;
}

/** A cgroup of the lab's own for a node (removed when the lab stops): where its socket load balancer goes. */
export function makeNodeCgroup(net: NetLab, index: number): string {
  const dir = `${cgroup2Root()}/${net.name(`cg${index}`)}`;
  mkdirSync(dir);
  net.defer(`cgroup ${dir}`, () => {
    try {
      rmdirSync(dir);
    } catch {
      // a process still in it (killed with the lab) or already gone
    }
  });
  return dir;
}

/** The cgroup v2 hierarchy (unified, or the hybrid layout's /sys/fs/cgroup/unified). */
function cgroup2Root(): string {
  if (existsSync('/sys/fs/cgroup/cgroup.controllers')) return '/sys/fs/cgroup';
  if (existsSync('/sys/fs/cgroup/unified/cgroup.controllers')) return '/sys/fs/cgroup/unified';
  throw new Error('no cgroup v2 hierarchy mounted (needed for the socket load balancer)');
}

interface Context {
  sim: KubeSim;
  net: NetLab;
  processes: Set<ChildProcess>;
  podNamespace: string;
  nodes: () => LabNode[];
  pods: () => LabPod[];
}

export function labServices(ctx: Context): LabServices {
  const { sim, net, podNamespace: namespace } = ctx;
  const created = new Set<string>();
  let clients = 0;
  const cgroups = new Map<string, string>();
  net.defer('lab cgroups', () => {
    for (const dir of cgroups.values()) {
      try {
        rmdirSync(dir);
      } catch {
        // still has a process (killed with the lab) or already gone
      }
    }
  });
  // The node's agent attached its socket load balancer to node.cgroup; a lab without one gets it attached here.
  const cgroupOf = (node: LabNode): string => {
    if (node.cgroup) return node.cgroup;
    let dir = cgroups.get(node.name);
    if (!dir) {
      dir = `${cgroup2Root()}/${net.name(`cg${node.index}`)}`;
      mkdirSync(dir);
      cgroups.set(node.name, dir);
      attachSocketLb(node.pinDir, dir);
    }
    return dir;
  };
  net.defer('lab services', () => {
    for (const name of created) {
      for (const [plural, n] of [['endpointslices', `${name}-lab`], ['services', name]] as const) {
        try {
          sim.store.delete(plural, namespace, n);
        } catch {
          // already gone
        }
      }
    }
  });

  const upsert = (plural: string, name: string, obj: Record<string, unknown>) => {
    const stored = sim.store.get(plural, namespace, name);
    if (!stored) sim.store.create(plural, obj as never);
    else sim.store.mutate(plural, namespace, name, (o) => ({ ...obj, metadata: { ...(obj.metadata as object), resourceVersion: o.metadata?.resourceVersion, uid: o.metadata?.uid } }) as never);
  };

  const frontends = (key: ServiceKey) =>
    ctx.nodes().map((n) => {
      const dp = openPinnedMaps(n.pinDir);
      try {
        return dp.maps.services.lookup(key);
      } finally {
        dp.close();
      }
    });

  return {
    apply(spec) {
      created.add(spec.name);
      upsert('services', spec.name, {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: spec.name, namespace },
        spec: {
          type: spec.type ?? 'ClusterIP',
          clusterIP: spec.clusterIP,
          clusterIPs: [spec.clusterIP],
          ipFamilies: ['IPv4'],
          ports: spec.ports.map((p) => ({ name: p.name, port: p.port, targetPort: p.targetPort, protocol: p.protocol ?? 'TCP', ...(p.nodePort ? { nodePort: p.nodePort } : {}) })),
          ...(spec.externalIPs ? { externalIPs: spec.externalIPs } : {}),
          sessionAffinity: spec.sessionAffinity ?? 'None',
          ...(spec.type === 'NodePort' ? { externalTrafficPolicy: spec.externalTrafficPolicy ?? 'Cluster' } : {}),
          internalTrafficPolicy: spec.internalTrafficPolicy ?? 'Cluster',
        },
      });
    },
    setEndpoints(service, endpoints, ports) {
      created.add(service);
      const name = `${service}-lab`;
      upsert('endpointslices', name, {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name, namespace, labels: { 'kubernetes.io/service-name': service } },
        addressType: 'IPv4',
        endpoints: endpoints.map((e) => {
          const terminating = e.terminating ?? false;
          const ready = e.ready ?? !terminating;
          return {
            addresses: [e.pod.ip],
            conditions: { ready, serving: e.serving ?? (ready || terminating), terminating },
            nodeName: e.pod.node,
            targetRef: { kind: 'Pod', namespace: e.pod.namespace, name: e.pod.name, uid: e.pod.uid },
          };
        }),
        ports: ports.map((p) => ({ name: p.name, port: p.port, protocol: p.protocol ?? 'TCP' })),
      });
    },
    delete(service) {
      for (const [plural, n] of [['endpointslices', `${service}-lab`], ['services', service]] as const) {
        if (sim.store.get(plural, namespace, n)) sim.store.delete(plural, namespace, n);
      }
      created.delete(service);
    },
    frontends,
    async waitFrontend(key, ok, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const values = frontends(key);
        const nodes = ctx.nodes();
        if (values.every((v, i) => v !== undefined && ok(v, nodes[i]!))) return;
        if (Date.now() > deadline) throw new Error(`timed out waiting for frontend ${key.vip}:${key.port}/${key.proto}: ${JSON.stringify(values)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    get nodeSubnetBits() {
      return Number(sim.cluster.options.nodeIPCIDR.split('/')[1]);
    },
    async addNodeAddress(node, ip, where) {
      if (where.device) {
        const r = await net.exec(node.netns, 'ip', ['addr', 'add', `${ip}/${this.nodeSubnetBits}`, 'dev', 'eth0']);
        if (r.code !== 0) throw new Error(`ip addr add ${ip} in ${node.netns}: ${r.stderr.trim()}`);
      }
      if (where.record) {
        const type = where.record;
        sim.store.mutate('nodes', '', node.name, (obj) => {
          const status = ((obj as { status?: { addresses?: Array<{ type: string; address: string }> } }).status ??= {});
          status.addresses = [...(status.addresses ?? []).filter((a) => a.address !== ip), { type, address: ip }];
        });
      }
    },
    async removeNodeAddress(node, ip) {
      // (Not there when only the record had it.)
      await net.exec(node.netns, 'ip', ['addr', 'del', `${ip}/${this.nodeSubnetBits}`, 'dev', 'eth0']);
      sim.store.mutate('nodes', '', node.name, (obj) => {
        const status = (obj as { status?: { addresses?: Array<{ type: string; address: string }> } }).status;
        if (status?.addresses) status.addresses = status.addresses.filter((a) => a.address !== ip);
      });
    },
    async addClient() {
      const nodes = ctx.nodes();
      const first = nodes[0]!;
      const bits = this.nodeSubnetBits;
      // The last usable address of the nodes' range: kube-sim hands node addresses out from the bottom.
      const base = first.ip.split('.').map(Number);
      const ip = bits <= 16 ? `${base[0]}.${base[1]}.255.${250 - clients}` : `${base[0]}.${base[1]}.${base[2]}.${250 - clients}`;
      const netns = await net.addNetns(net.name(`c${++clients}`));
      const ifname = `c${clients}`;
      const underlay = net.name('u');
      await net.addVeth({ ns: underlay, name: ifname, mtu: 9000 }, { ns: netns, name: 'eth0', mtu: 9000 });
      await net.setMaster(underlay, ifname, 'br0');
      await net.addAddr(netns, 'eth0', `${ip}/${bits}`);
      return { netns, ip };
    },
    hostExec(node, cmd, args, options = {}) {
      const dir = cgroupOf(node);
      return run('sh', ['-c', `echo $$ > ${dir}/cgroup.procs && exec nsenter --net=/run/netns/${node.netns} "$@"`, 'sh', cmd, ...args], { timeoutMs: options.timeoutMs ?? 15_000 });
    },
    spawnIn(netns, cmd, args) {
      const child = spawn('nsenter', [`--net=/run/netns/${netns}`, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      ctx.processes.add(child);
      return child;
    },
  };
}
