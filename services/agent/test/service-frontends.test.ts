/**
 * Which frontend addresses a Service record may claim (issue 20): a clusterIP outside the service CIDR, or an
 * external/LoadBalancer IP inside the pod or service ranges, would capture traffic meant for pods or other services.
 */
import { createLogger } from '@sluice/log';
import { createRegistry } from '@sluice/metrics';
import { SCHEMA_VERSION, type SlimEndpointSlice, type SlimService } from '@sluice/slim';
import { describe, expect, it } from 'vitest';
import { Conflicts } from '../src/tables/conflicts.ts';
import { ServicesTable } from '../src/tables/services.ts';

const log = createLogger({ component: 'test', level: 'silent' });

function service(over: Partial<SlimService>): SlimService {
  return {
    v: SCHEMA_VERSION, namespace: 'default', name: 'web', type: 'ClusterIP', clusterIPs: ['10.96.0.10'], externalIPs: [], loadBalancerIPs: [],
    ports: [{ name: 'http', port: 80, targetPort: 'web', nodePort: 0, protocol: 'TCP' }],
    sessionAffinity: 'None', externalTrafficPolicy: 'Cluster', internalTrafficPolicy: 'Cluster', ...over,
  };
}
const slice: SlimEndpointSlice = {
  v: SCHEMA_VERSION, namespace: 'default', name: 'web-abc', service: 'web', addressType: 'IPv4',
  endpoints: [{ addresses: ['10.128.1.5'], ready: true, serving: true, terminating: false, nodeName: 'n1' }],
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
};

function table() {
  const registry = createRegistry();
  const conflicts = new Conflicts(log, registry);
  const t = new ServicesTable('n1', { serviceCidr: '10.96.0.0/12', clusterCidr: '10.128.0.0/9', conflicts });
  t.upsertSlice(slice, 1);
  return { t, conflicts, registry };
}
const vips = (t: ServicesTable) => (t.get('default/web')?.frontends ?? []).map((f) => `${f.vip}:${f.port}`).sort();

describe('service frontends from etcd', () => {
  it('programs a clusterIP inside the service CIDR and an external IP outside the cluster ranges', () => {
    const { t, conflicts } = table();
    t.upsertService(service({ externalIPs: ['192.0.2.10'] }), 2);
    expect(vips(t)).toEqual(['10.96.0.10:80', '192.0.2.10:80']);
    expect(conflicts.size).toBe(0);
  });

  it('refuses a clusterIP outside the service CIDR (a pod IP, say) and reports it once, with a metric', async () => {
    const { t, conflicts, registry } = table();
    t.upsertService(service({ clusterIPs: ['10.128.1.5'] }), 2);
    t.upsertService(service({ clusterIPs: ['10.128.1.5'] }), 3);
    expect(t.get('default/web')).toBeUndefined();
    expect(conflicts.has('service_ip_outside_service_cidr', 'default/web')).toBe(true);
    expect(await registry.getSingleMetricAsString('sluice_agent_conflicts_total')).toContain('sluice_agent_conflicts_total{reason="service_ip_outside_service_cidr"} 1');
    // Fixed by the next record: programmed, the conflict cleared.
    t.upsertService(service({}), 4);
    expect(vips(t)).toEqual(['10.96.0.10:80']);
    expect(conflicts.size).toBe(0);
  });

  it('refuses external and LoadBalancer IPs inside the pod range or the service CIDR, keeping the rest of the service', () => {
    const { t, conflicts } = table();
    t.upsertService(service({ type: 'LoadBalancer', externalIPs: ['10.128.1.5', '192.0.2.10'], loadBalancerIPs: ['10.96.0.20'] }), 2);
    expect(vips(t)).toEqual(['10.96.0.10:80', '192.0.2.10:80']);
    expect(conflicts.has('external_ip_in_cluster_range', 'default/web')).toBe(true);
    t.deleteService('default/web', 3);
    expect(conflicts.size).toBe(0);
  });
});
