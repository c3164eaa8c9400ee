/**
 * The four kinds the operator mirrors, each described once: where to list and watch it, how to slim it, its etcd key,
 * and whether it belongs in etcd at all (a pod only while it is a datapath endpoint).
 */
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
import type { WatchDecoder } from './json-walk.ts';
import { EndpointSliceDecoder } from './slice-decoder.ts';
import type { KubeObject } from './watch.ts';

export interface Mirrored {
  kind: ResourceKind;
  /** The Kubernetes kind, for logs and metrics. */
  kubeKind: string;
  /** The list and watch path. */
  path: string;
  /** The etcd key of an object; undefined when it has no name (such an object is skipped). */
  key: (obj: KubeObject) => string | undefined;
  /**
   * The slim record to store, not yet validated, or undefined when the object must not be in etcd. Validation is left
   * to `validate` so that a caller can skip it for bytes it has already validated (a heartbeat changes nothing).
   * The object is the API server's JSON as parsed (timestamps are strings); the builders read it as the typed object.
   */
  build: (obj: KubeObject) => SlimRecord<SlimKind> | undefined;
  /** Throws SlimError naming the bad field of a built record. */
  validate: (record: SlimRecord<SlimKind>) => void;
  /** Whether its watch events are worth fingerprinting: only kinds whose objects heartbeat (Nodes). */
  heartbeats: boolean;
  /** A selective decoder for its watch events, for kinds whose events are large and mostly unchanged. */
  decoder?: () => WatchDecoder;
}

/** An object's etcd key from its namespace and name; undefined when it has no usable name. */
function keyBy(key: (namespace: string, name: string) => string): (obj: KubeObject) => string | undefined {
  return (obj) => {
    const { name, namespace } = obj.metadata ?? {};
    if (typeof name !== 'string' || name === '') return undefined;
    return key(typeof namespace === 'string' ? namespace : '', name);
  };
}

export function mirroredResources(keys: KeySchema): Mirrored[] {
  return [
    {
      kind: 'nodes',
      kubeKind: 'Node',
      path: '/api/v1/nodes',
      key: keyBy((_namespace, name) => keys.node(name)),
      build: (obj) => buildSlimNode(obj as V1Node),
      validate: (record) => validateSlim('node', record as SlimRecord<'node'>),
      heartbeats: true,
    },
    {
      kind: 'pods',
      kubeKind: 'Pod',
      path: '/api/v1/pods',
      key: keyBy((namespace, name) => keys.pod(namespace, name)),
      build: (obj) => {
        const slim = buildSlimPod(obj as V1Pod);
        return isEndpoint(slim) ? slim : undefined;
      },
      validate: (record) => validateSlim('pod', record as SlimRecord<'pod'>),
      heartbeats: false,
    },
    {
      kind: 'services',
      kubeKind: 'Service',
      path: '/api/v1/services',
      key: keyBy((namespace, name) => keys.service(namespace, name)),
      build: (obj) => buildSlimService(obj as V1Service),
      validate: (record) => validateSlim('service', record as SlimRecord<'service'>),
      heartbeats: false,
    },
    {
      kind: 'endpointslices',
      kubeKind: 'EndpointSlice',
      path: '/apis/discovery.k8s.io/v1/endpointslices',
      key: keyBy((namespace, name) => keys.endpointSlice(namespace, name)),
      build: (obj) => buildSlimEndpointSlice(obj as V1EndpointSlice),
      validate: (record) => validateSlim('endpointSlice', record as SlimRecord<'endpointSlice'>),
      heartbeats: false,
      decoder: () => new EndpointSliceDecoder(),
    },
  ];
}
