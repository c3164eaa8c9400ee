/**
 * Full Kubernetes objects shaped like the ones a real kubelet, scheduler and endpointslice controller write: the bulk
 * (images, managedFields, conditions, nodeInfo) is what makes a Node 10–20 KB, and it is exactly what Sluice's slim
 * records drop. Everything is deterministic for a given seed.
 */
import type { V1EndpointSlice, V1Node, V1Pod, V1Service } from '@kubernetes/client-node';
import { seededRandom } from '@sluice/backoff';

const KUBELET_VERSION = 'v1.31.4';

const HEX_BYTE = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** `length` hex digits, 8 from each draw: by byte from a table (a 32-bit number's toString(16) is a slow double-to-radix conversion). */
function hex(random: () => number, length: number): string {
  let out = '';
  while (out.length < length) {
    const x = Math.floor(random() * 0x100000000);
    out += HEX_BYTE[x >>> 24]! + HEX_BYTE[(x >>> 16) & 255]! + HEX_BYTE[(x >>> 8) & 255]! + HEX_BYTE[x & 255]!;
  }
  return out.slice(0, length);
}

function uid(random: () => number): string {
  const h = hex(random, 32);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

const IMAGE_NAMES = [
  'registry.k8s.io/kube-proxy', 'quay.io/cilium/cilium', 'docker.io/library/nginx', 'registry.k8s.io/pause',
  'docker.io/bitnami/redis', 'gcr.io/google-containers/fluentd-elasticsearch', 'quay.io/prometheus/node-exporter',
  'docker.io/grafana/promtail', 'registry.k8s.io/coredns/coredns', 'docker.io/library/postgres', 'docker.io/istio/proxyv2',
  'quay.io/jetstack/cert-manager-controller', 'docker.io/library/busybox', 'ghcr.io/fluxcd/source-controller',
  'docker.io/library/golang', 'registry.k8s.io/metrics-server/metrics-server', 'docker.io/library/python',
  'docker.io/envoyproxy/envoy', 'quay.io/argoproj/argocd', 'docker.io/library/node', 'docker.io/library/alpine',
  'registry.k8s.io/ingress-nginx/controller', 'docker.io/bitnami/kafka', 'docker.io/library/mysql',
];

export interface NodeSpecInput {
  name: string;
  internalIP: string;
  podCIDR: string;
  podCIDRv6?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  seed?: number;
  /** Creation and heartbeat times; a fixed instant keeps objects reproducible. */
  now?: Date;
}

/** A Node as a kubelet registers it and keeps it updated: 10–20 KB of JSON. */
export function realisticNode(input: NodeSpecInput): V1Node {
  const random = seededRandom(input.seed ?? hashString(input.name));
  const now = input.now ?? new Date('2026-01-01T00:00:00Z');
  // A kubelet reports up to 50 images (nodeStatusMaxImages): on a busy node that is several versions of each.
  const images = Array.from({ length: 48 }, (_, i) => {
    const name = IMAGE_NAMES[i % IMAGE_NAMES.length]!;
    const digest = `sha256:${hex(random, 64)}`;
    const tag = `v${1 + (i % 4)}.${Math.floor(random() * 30)}.${Math.floor(random() * 10)}`;
    return { names: [`${name}@${digest}`, `${name}:${tag}`], sizeBytes: 5_000_000 + Math.floor(random() * 400_000_000) };
  });
  const condition = (type: string, status: string, reason: string, message: string) => ({
    type, status, lastHeartbeatTime: now, lastTransitionTime: new Date(now.getTime() - 86_400_000), reason, message,
  });
  const managedTime = now;
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: input.name,
      uid: uid(random),
      resourceVersion: '1',
      creationTimestamp: new Date(now.getTime() - 86_400_000 * 7),
      labels: {
        'beta.kubernetes.io/arch': 'amd64',
        'beta.kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        'kubernetes.io/hostname': input.name,
        'kubernetes.io/os': 'linux',
        'node.kubernetes.io/instance-type': 'm5.xlarge',
        'topology.kubernetes.io/region': 'eu-west-1',
        'topology.kubernetes.io/zone': `eu-west-1${'abc'[Math.floor(random() * 3)]}`,
        ...input.labels,
      },
      annotations: {
        'node.alpha.kubernetes.io/ttl': '0',
        'volumes.kubernetes.io/controller-managed-attach-detach': 'true',
        'kubeadm.alpha.kubernetes.io/cri-socket': 'unix:///run/containerd/containerd.sock',
        ...input.annotations,
      },
      managedFields: [
        {
          manager: 'kubelet', operation: 'Update', apiVersion: 'v1', time: managedTime, fieldsType: 'FieldsV1',
          fieldsV1: {
            'f:metadata': { 'f:annotations': { '.': {}, 'f:node.alpha.kubernetes.io/ttl': {}, 'f:volumes.kubernetes.io/controller-managed-attach-detach': {} },
              'f:labels': { '.': {}, 'f:beta.kubernetes.io/arch': {}, 'f:beta.kubernetes.io/os': {}, 'f:kubernetes.io/arch': {}, 'f:kubernetes.io/hostname': {}, 'f:kubernetes.io/os': {} } },
            'f:spec': { 'f:podCIDR': {}, 'f:podCIDRs': { '.': {}, [`v:"${input.podCIDR}"`]: {} }, 'f:providerID': {} },
          },
        },
        {
          manager: 'kubelet', operation: 'Update', apiVersion: 'v1', time: managedTime, fieldsType: 'FieldsV1', subresource: 'status',
          fieldsV1: {
            'f:status': {
              'f:allocatable': { 'f:cpu': {}, 'f:ephemeral-storage': {}, 'f:memory': {}, 'f:pods': {} },
              'f:capacity': { 'f:cpu': {}, 'f:ephemeral-storage': {}, 'f:memory': {}, 'f:pods': {} },
              'f:conditions': Object.fromEntries(['DiskPressure', 'MemoryPressure', 'PIDPressure', 'Ready'].map((t) => [
                `k:{"type":"${t}"}`, { 'f:lastHeartbeatTime': {}, 'f:lastTransitionTime': {}, 'f:message': {}, 'f:reason': {}, 'f:status': {} },
              ])),
              'f:daemonEndpoints': { 'f:kubeletEndpoint': { 'f:Port': {} } },
              'f:images': {},
              'f:nodeInfo': { 'f:architecture': {}, 'f:bootID': {}, 'f:containerRuntimeVersion': {}, 'f:kernelVersion': {}, 'f:kubeProxyVersion': {}, 'f:kubeletVersion': {}, 'f:machineID': {}, 'f:operatingSystem': {}, 'f:osImage': {}, 'f:systemUUID': {} },
            },
          },
        },
      ],
    },
    spec: {
      podCIDR: input.podCIDR,
      podCIDRs: input.podCIDRv6 ? [input.podCIDR, input.podCIDRv6] : [input.podCIDR],
      providerID: `aws:///eu-west-1a/i-${hex(random, 17)}`,
    },
    status: {
      addresses: [
        { type: 'InternalIP', address: input.internalIP },
        { type: 'Hostname', address: input.name },
        { type: 'InternalDNS', address: `${input.name}.eu-west-1.compute.internal` },
      ],
      allocatable: { cpu: '3920m', 'ephemeral-storage': '95551679124', 'hugepages-1Gi': '0', 'hugepages-2Mi': '0', memory: '15257660Ki', pods: '110' },
      capacity: { cpu: '4', 'ephemeral-storage': '103678292Ki', 'hugepages-1Gi': '0', 'hugepages-2Mi': '0', memory: '16208956Ki', pods: '110' },
      conditions: [
        condition('MemoryPressure', 'False', 'KubeletHasSufficientMemory', 'kubelet has sufficient memory available'),
        condition('DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'kubelet has no disk pressure'),
        condition('PIDPressure', 'False', 'KubeletHasSufficientPID', 'kubelet has sufficient PID available'),
        condition('Ready', 'True', 'KubeletReady', 'kubelet is posting ready status'),
      ],
      daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
      images,
      nodeInfo: {
        architecture: 'amd64', bootID: uid(random), containerRuntimeVersion: 'containerd://1.7.24', kernelVersion: '6.1.0-28-cloud-amd64',
        kubeProxyVersion: KUBELET_VERSION, kubeletVersion: KUBELET_VERSION, machineID: hex(random, 32), operatingSystem: 'linux',
        osImage: 'Debian GNU/Linux 12 (bookworm)', systemUUID: uid(random),
      },
    },
  };
}

/**
 * What a kubelet status update changes: heartbeat times in the conditions and the kubelet's managedFields timestamp.
 * The API server also bumps resourceVersion; the caller (kube-sim) owns that.
 */
export function heartbeat(node: V1Node, now: Date): V1Node {
  return {
    ...node,
    metadata: {
      ...node.metadata,
      managedFields: node.metadata?.managedFields?.map((entry) => (entry.manager === 'kubelet' ? { ...entry, time: now } : entry)),
    },
    status: {
      ...node.status,
      conditions: node.status?.conditions?.map((c) => ({ ...c, lastHeartbeatTime: now })),
    },
  };
}

export interface PodSpecInput {
  namespace: string;
  name: string;
  nodeName?: string;
  hostIP?: string;
  podIP?: string;
  podIPv6?: string;
  labels?: Record<string, string>;
  phase?: 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown';
  hostNetwork?: boolean;
  ports?: { name?: string; containerPort: number; protocol?: string }[];
  seed?: number;
  now?: Date;
}

/** A scheduled, running Pod with a single container, as the kubelet reports it. */
export function realisticPod(input: PodSpecInput): V1Pod {
  const random = seededRandom(input.seed ?? hashString(`${input.namespace}/${input.name}`));
  const now = input.now ?? new Date('2026-01-01T00:00:00Z');
  const phase = input.phase ?? (input.podIP ? 'Running' : 'Pending');
  const running = phase === 'Running';
  const podIPs = [input.podIP, input.podIPv6].filter((ip): ip is string => !!ip).map((ip) => ({ ip }));
  const app = input.labels?.app ?? input.name.replace(/-[a-z0-9]+-[a-z0-9]+$/, '');
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      namespace: input.namespace,
      name: input.name,
      uid: uid(random),
      resourceVersion: '1',
      creationTimestamp: now,
      generateName: `${app}-`,
      labels: { app, 'pod-template-hash': hex(random, 10), ...input.labels },
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${app}-${hex(random, 10)}`, uid: uid(random), controller: true, blockOwnerDeletion: true }],
    },
    spec: {
      nodeName: input.nodeName,
      hostNetwork: input.hostNetwork || undefined,
      containers: [
        {
          name: app,
          image: 'docker.io/library/nginx:1.27',
          imagePullPolicy: 'IfNotPresent',
          ports: (input.ports ?? [{ name: 'http', containerPort: 80, protocol: 'TCP' }]).map((p) => ({ protocol: 'TCP', ...p })),
          resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '256Mi' } },
          terminationMessagePath: '/dev/termination-log',
          terminationMessagePolicy: 'File',
          volumeMounts: [{ name: 'kube-api-access', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true }],
        },
      ],
      dnsPolicy: 'ClusterFirst',
      enableServiceLinks: true,
      preemptionPolicy: 'PreemptLowerPriority',
      priority: 0,
      restartPolicy: 'Always',
      schedulerName: 'default-scheduler',
      serviceAccountName: 'default',
      terminationGracePeriodSeconds: 30,
      tolerations: [
        { key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
        { key: 'node.kubernetes.io/unreachable', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
      ],
      volumes: [{ name: 'kube-api-access', projected: { defaultMode: 420, sources: [{ serviceAccountToken: { expirationSeconds: 3607, path: 'token' } }] } }],
    },
    status: {
      phase,
      hostIP: input.hostIP,
      hostIPs: input.hostIP ? [{ ip: input.hostIP }] : undefined,
      podIP: input.podIP,
      podIPs: podIPs.length ? podIPs : undefined,
      qosClass: 'Burstable',
      startTime: now,
      conditions: ['PodReadyToStartContainers', 'Initialized', 'Ready', 'ContainersReady', 'PodScheduled'].map((type) => ({
        type, status: running || type === 'PodScheduled' ? 'True' : 'False', lastProbeTime: undefined, lastTransitionTime: now,
      })) as NonNullable<V1Pod['status']>['conditions'],
      containerStatuses: [
        {
          name: app,
          image: 'docker.io/library/nginx:1.27',
          imageID: `docker.io/library/nginx@sha256:${hex(random, 64)}`,
          containerID: `containerd://${hex(random, 64)}`,
          ready: running,
          restartCount: 0,
          started: running,
          state: running ? { running: { startedAt: now } } : { waiting: { reason: 'ContainerCreating' } },
        },
      ],
    },
  };
}

export interface ServiceSpecInput {
  namespace: string;
  name: string;
  clusterIP: string;
  selector?: Record<string, string>;
  type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer';
  ports?: { name?: string; port: number; targetPort?: number | string; nodePort?: number; protocol?: string }[];
  seed?: number;
  now?: Date;
}

export function realisticService(input: ServiceSpecInput): V1Service {
  const random = seededRandom(input.seed ?? hashString(`svc/${input.namespace}/${input.name}`));
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      namespace: input.namespace,
      name: input.name,
      uid: uid(random),
      resourceVersion: '1',
      creationTimestamp: input.now ?? new Date('2026-01-01T00:00:00Z'),
      labels: { app: input.name },
    },
    spec: {
      type: input.type ?? 'ClusterIP',
      clusterIP: input.clusterIP,
      clusterIPs: [input.clusterIP],
      ipFamilies: ['IPv4'],
      ipFamilyPolicy: 'SingleStack',
      selector: input.selector ?? { app: input.name },
      sessionAffinity: 'None',
      internalTrafficPolicy: 'Cluster',
      ports: (input.ports ?? [{ name: 'http', port: 80, targetPort: 80 }]).map((p) => ({ protocol: 'TCP', ...p })),
    },
    status: { loadBalancer: {} },
  };
}

export interface EndpointSliceInput {
  namespace: string;
  service: string;
  name?: string;
  /** `podUid`: the pod's metadata.uid for its targetRef (default: one derived from the pod's name, stable across writes). */
  endpoints: { ip: string; nodeName?: string; ready?: boolean; podName?: string; podUid?: string }[];
  ports?: { name?: string; port: number; protocol?: string }[];
  seed?: number;
  now?: Date;
}

export function realisticEndpointSlice(input: EndpointSliceInput): V1EndpointSlice {
  const random = seededRandom(input.seed ?? hashString(`eps/${input.namespace}/${input.service}`));
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      namespace: input.namespace,
      name: input.name ?? `${input.service}-${hex(random, 5)}`,
      uid: uid(random),
      resourceVersion: '1',
      creationTimestamp: input.now ?? new Date('2026-01-01T00:00:00Z'),
      generateName: `${input.service}-`,
      labels: { 'kubernetes.io/service-name': input.service, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' },
      ownerReferences: [{ apiVersion: 'v1', kind: 'Service', name: input.service, uid: uid(random), controller: true, blockOwnerDeletion: true }],
    },
    addressType: 'IPv4',
    endpoints: input.endpoints.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: e.ready ?? true, serving: e.ready ?? true, terminating: false },
      nodeName: e.nodeName,
      // The pod's uid, not the next of this slice's random sequence: a controller rewriting the slice writes every other
      // endpoint's bytes unchanged, as the real EndpointSlice controller does.
      targetRef: e.podName ? { kind: 'Pod', namespace: input.namespace, name: e.podName, uid: e.podUid ?? uid(seededRandom(hashString(`pod/${input.namespace}/${e.podName}`))) } : undefined,
    })),
    ports: (input.ports ?? [{ name: 'http', port: 80 }]).map((p) => ({ protocol: 'TCP', ...p })),
  };
}

/** FNV-1a: a stable seed from a name, so that an object looks the same every time it is made. */
export function hashString(value: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < value.length; i++) {
    hash ^= value.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}
