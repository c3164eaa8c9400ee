/**
 * Per-kind rules of the built-in types, applied on every create and update after the generic metadata checks: what
 * is required, and what the API server fills in (a pod's phase, a namespace's label, a Service's cluster IPs and node
 * ports, a Secret's stringData, a Deployment's defaulted replicas and the status a running controller reports).
 */
import type { KubeObject, ResourceType } from './resources.ts';
import { ServiceAllocator, type ServiceRangeOptions } from './services.ts';
import type { Cause } from './status.ts';
import { timestamp } from './time.ts';

export interface AdmitContext {
  old?: KubeObject;
  dryRun: boolean;
  subresource?: 'status';
  now: Date;
}

type Obj = Record<string, unknown>;
const isObject = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export class KindRules {
  readonly services: ServiceAllocator;

  constructor(options: ServiceRangeOptions = {}) {
    this.services = new ServiceAllocator(options);
  }

  /** Kind-specific problems of an object (metadata is checked by the store for every kind). */
  validate(r: ResourceType, obj: KubeObject): Cause[] {
    const causes: Cause[] = [];
    if (r.group === '' && r.plural === 'pods') {
      const spec = obj.spec as { containers?: unknown } | undefined;
      if (!Array.isArray(spec?.containers) || spec.containers.length === 0) causes.push({ field: 'spec.containers', message: 'Required value', reason: 'FieldValueRequired' });
    } else if (r.group === '' && r.plural === 'services') {
      const spec = obj.spec as { clusterIP?: unknown; ports?: unknown } | undefined;
      if (spec?.clusterIP !== undefined && typeof spec.clusterIP !== 'string') causes.push({ field: 'spec.clusterIP', message: 'Invalid value: must be a string' });
      if (spec?.ports !== undefined && !Array.isArray(spec.ports)) causes.push({ field: 'spec.ports', message: 'Invalid value: must be a list' });
    } else if (r.group === '' && r.plural === 'secrets') {
      for (const [k, v] of Object.entries((obj.data as Obj | undefined) ?? {})) {
        if (typeof v !== 'string' || !BASE64.test(v) || v.length % 4 !== 0) causes.push({ field: `data[${k}]`, message: 'Invalid value: must be base64 encoded' });
      }
    } else if (r.group === '' && r.plural === 'configmaps') {
      for (const [k, v] of Object.entries((obj.data as Obj | undefined) ?? {})) {
        if (typeof v !== 'string') causes.push({ field: `data[${k}]`, message: 'Invalid value: must be a string' });
      }
    } else if (r.group === 'apps' && (r.plural === 'deployments' || r.plural === 'daemonsets')) {
      const spec = obj.spec as { selector?: unknown; template?: { metadata?: { labels?: Record<string, string> } } } | undefined;
      if (!isObject(spec?.selector)) causes.push({ field: 'spec.selector', message: 'Required value', reason: 'FieldValueRequired' });
      if (!isObject(spec?.template)) causes.push({ field: 'spec.template', message: 'Required value', reason: 'FieldValueRequired' });
      const match = (spec?.selector as { matchLabels?: Record<string, string> } | undefined)?.matchLabels ?? {};
      const labels = spec?.template?.metadata?.labels ?? {};
      if (Object.entries(match).some(([k, v]) => labels[k] !== v)) {
        causes.push({ field: 'spec.template.metadata.labels', message: `Invalid value: ${JSON.stringify(labels)}: \`selector\` does not match template \`labels\`` });
      }
    }
    return causes;
  }

  /** Defaults and allocations (throws a 422 when an allocation request cannot be met). */
  prepare(r: ResourceType, obj: KubeObject, ctx: AdmitContext): void {
    if (r.group !== '' && r.group !== 'apps') return;
    const meta = obj.metadata!;
    switch (r.plural) {
      case 'pods': {
        const status = ((obj.status as Obj | undefined) ??= {});
        status.phase ??= 'Pending';
        break;
      }
      case 'namespaces':
        obj.spec ??= { finalizers: ['kubernetes'] };
        obj.status ??= { phase: 'Active' };
        meta.labels = { 'kubernetes.io/metadata.name': meta.name!, ...meta.labels };
        break;
      case 'services': {
        if (ctx.subresource === 'status') break;
        const spec = ((obj.spec as Obj | undefined) ??= {});
        this.services.prepare(meta.name!, spec, ctx.old?.spec as Obj | undefined, ctx.dryRun);
        spec.sessionAffinity ??= 'None';
        if (spec.type !== 'ExternalName') spec.internalTrafficPolicy ??= 'Cluster';
        if (spec.type === 'NodePort' || spec.type === 'LoadBalancer') spec.externalTrafficPolicy ??= 'Cluster';
        obj.status ??= { loadBalancer: {} };
        break;
      }
      case 'secrets': {
        obj.type ??= 'Opaque';
        const stringData = obj.stringData as Record<string, unknown> | undefined;
        if (isObject(stringData)) {
          const data = ((obj.data as Obj | undefined) ??= {});
          for (const [k, v] of Object.entries(stringData)) data[k] = Buffer.from(String(v)).toString('base64');
        }
        delete obj.stringData;
        break;
      }
      case 'deployments':
      case 'daemonsets': {
        if (ctx.subresource === 'status') break;
        const spec = ((obj.spec as Obj | undefined) ??= {});
        if (r.plural === 'deployments') {
          spec.replicas ??= 1;
          spec.revisionHistoryLimit ??= 10;
          spec.progressDeadlineSeconds ??= 600;
          spec.strategy ??= { type: 'RollingUpdate', rollingUpdate: { maxSurge: '25%', maxUnavailable: '25%' } };
        } else spec.updateStrategy ??= { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1, maxSurge: 0 } };
        break;
      }
    }
  }

  /**
   * The status a workload controller would report once it caught up (kube-sim runs no ReplicaSets): all replicas
   * ready, so `kubectl rollout status` and `kubectl wait` finish. Called after generation is known.
   */
  workloadStatus(r: ResourceType, obj: KubeObject, ctx: AdmitContext, nodes: number): void {
    if (r.group !== 'apps' || ctx.subresource === 'status') return;
    const generation = obj.metadata?.generation;
    const t = timestamp(ctx.now);
    if (r.plural === 'deployments') {
      const n = Number((obj.spec as Obj).replicas ?? 1);
      obj.status = {
        observedGeneration: generation, replicas: n, updatedReplicas: n, readyReplicas: n, availableReplicas: n,
        conditions: [
          { type: 'Available', status: 'True', reason: 'MinimumReplicasAvailable', message: 'Deployment has minimum availability.', lastUpdateTime: t, lastTransitionTime: t },
          { type: 'Progressing', status: 'True', reason: 'NewReplicaSetAvailable', message: `ReplicaSet "${obj.metadata?.name}" has successfully progressed.`, lastUpdateTime: t, lastTransitionTime: t },
        ],
      };
    } else if (r.plural === 'daemonsets') {
      obj.status = {
        observedGeneration: generation, currentNumberScheduled: nodes, desiredNumberScheduled: nodes, numberAvailable: nodes,
        numberMisscheduled: 0, numberReady: nodes, updatedNumberScheduled: nodes,
      };
    }
  }

  released(r: ResourceType, obj: KubeObject): void {
    if (r.group === '' && r.plural === 'services') this.services.release(obj.spec as Obj | undefined);
  }
}
