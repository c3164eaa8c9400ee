/**
 * The four kinds the operator mirrors, each described once: where to list and watch it, how to slim it, its etcd key,
 * and whether it belongs in etcd at all (a pod only while it is a datapath endpoint).
 */
import { CoreV1Api, DiscoveryV1Api, type KubeConfig, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import type { V1EndpointSlice, V1Node, V1Pod, V1Service } from '@kubernetes/client-node';
import type { KeySchema, ResourceKind } from '@sluice/kvstore';
import {
  buildSlimEndpointSlice,
  buildSlimNode,
  buildSlimPod,
  buildSlimService,
  isEndpoint,
  validateSlim,
  type SlimKind,
  type SlimRecord,
} from '@sluice/slim';

export interface Mirrored<T extends KubernetesObject> {
  kind: ResourceKind;
  /** The Kubernetes kind, for logs and metrics. */
  kubeKind: string;
  /** The watch path, as client-node's ListWatch takes it. */
  path: string;
  /** One page of the list; the informer's list function walks the pages. */
  listPage: (limit: number, continueToken: string | undefined) => Promise<KubernetesListObject<T>>;
  /** The etcd key of an object. */
  key: (obj: T) => string;
  /**
   * The slim record to store, not yet validated, or undefined when the object must not be in etcd. Validation is left
   * to `validate` so that a caller can skip it for bytes it has already validated (a heartbeat changes nothing).
   */
  build: (obj: T) => SlimRecord<SlimKind> | undefined;
  /** Throws SlimError naming the bad field of a built record. */
  validate: (record: SlimRecord<SlimKind>) => void;
  /**
   * Drops, in place, what `build` never reads, before the informer caches the object (as client-go's informer
   * transforms do): managedFields everywhere, and a Node's image list, most of its bytes.
   */
  trim: (obj: T) => void;
}

function dropManagedFields(obj: KubernetesObject): void {
  if (obj.metadata) delete obj.metadata.managedFields;
}

/** The ways a name can be missing from a malformed object; such an object has no key and is skipped. */
function nameOf(obj: KubernetesObject): { namespace: string; name: string } {
  return { namespace: obj.metadata?.namespace ?? '', name: obj.metadata?.name ?? '' };
}

export function mirroredResources(config: KubeConfig, keys: KeySchema): Mirrored<KubernetesObject>[] {
  const core = config.makeApiClient(CoreV1Api);
  const discovery = config.makeApiClient(DiscoveryV1Api);
  const nodes: Mirrored<V1Node> = {
    kind: 'nodes',
    kubeKind: 'Node',
    path: '/api/v1/nodes',
    listPage: (limit, token) => core.listNode({ limit, _continue: token }),
    key: (node) => keys.node(nameOf(node).name),
    build: buildSlimNode,
    validate: (record) => validateSlim('node', record as SlimRecord<'node'>),
    trim: (node) => {
      dropManagedFields(node);
      if (node.status) delete node.status.images;
    },
  };
  const pods: Mirrored<V1Pod> = {
    kind: 'pods',
    kubeKind: 'Pod',
    path: '/api/v1/pods',
    listPage: (limit, token) => core.listPodForAllNamespaces({ limit, _continue: token }),
    key: (pod) => keys.pod(nameOf(pod).namespace, nameOf(pod).name),
    build: (pod) => {
      const slim = buildSlimPod(pod);
      return isEndpoint(slim) ? slim : undefined;
    },
    validate: (record) => validateSlim('pod', record as SlimRecord<'pod'>),
    trim: dropManagedFields,
  };
  const services: Mirrored<V1Service> = {
    kind: 'services',
    kubeKind: 'Service',
    path: '/api/v1/services',
    listPage: (limit, token) => core.listServiceForAllNamespaces({ limit, _continue: token }),
    key: (svc) => keys.service(nameOf(svc).namespace, nameOf(svc).name),
    build: buildSlimService,
    validate: (record) => validateSlim('service', record as SlimRecord<'service'>),
    trim: dropManagedFields,
  };
  const slices: Mirrored<V1EndpointSlice> = {
    kind: 'endpointslices',
    kubeKind: 'EndpointSlice',
    path: '/apis/discovery.k8s.io/v1/endpointslices',
    listPage: (limit, token) => discovery.listEndpointSliceForAllNamespaces({ limit, _continue: token }),
    key: (slice) => keys.endpointSlice(nameOf(slice).namespace, nameOf(slice).name),
    build: buildSlimEndpointSlice,
    validate: (record) => validateSlim('endpointSlice', record as SlimRecord<'endpointSlice'>),
    trim: dropManagedFields,
  };
  return [nodes, pods, services, slices] as unknown as Mirrored<KubernetesObject>[];
}

/** Lists every page of a kind (limit/continue) so that one huge response never has to be held at once by the server. */
export async function listAllPages<T extends KubernetesObject>(resource: Mirrored<T>, pageSize: number): Promise<KubernetesListObject<T>> {
  const items: T[] = [];
  let token: string | undefined;
  let resourceVersion = '';
  do {
    const page = await resource.listPage(pageSize, token);
    items.push(...page.items);
    // The first page pins the snapshot; the continue token keeps the following pages on it.
    resourceVersion ||= page.metadata?.resourceVersion ?? '';
    token = page.metadata?._continue || undefined;
  } while (token);
  return { apiVersion: 'v1', kind: 'List', metadata: { resourceVersion }, items };
}
