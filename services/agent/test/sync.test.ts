/**
 * The completeness contract in the agent (AgentCore with waitForSync, as sluice-agent runs it): no first full pass
 * before the operator's sync markers, and an etcd replaced by an empty one changes nothing in the maps until the
 * operator has synced it again — then only what changed.
 */
import { memoryDatapath, type Datapath } from '@sluice/datapath';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { createKvClient, keySchema, syncedMarkerValue, RESOURCE_KINDS, type Etcd3 } from '@sluice/kvstore';
import { createLogger } from '@sluice/log';
import { encodeSlimString, SCHEMA_VERSION, type SlimNode, type SlimPod } from '@sluice/slim';
import { afterAll, describe, expect, it } from 'vitest';
import { startProxy, type CutProxy } from '../../../libs/kvstore/test/proxy.ts';
import { AgentCore } from '../src/index.ts';

const keys = keySchema('agent-sync/');
const node = (name: string, ip: string, cidr: string): SlimNode => ({ v: SCHEMA_VERSION, name, labels: {}, addresses: [{ type: 'InternalIP', ip }], podCIDRs: [cidr], ready: 'True', healthIPs: [] });
const pod = (name: string, nodeName: string, ip: string): SlimPod => ({ v: SCHEMA_VERSION, namespace: 'default', name, uid: name, nodeName, hostIP: '', podIPs: [ip], hostNetwork: false, phase: 'Running', labels: {}, deleting: false, ports: [] });

/** What the operator would write: the records, then the markers. */
async function operatorState(client: Etcd3, pods: Array<[string, string, string]>, markers = true) {
  await client.put(keys.node('n1')).value(encodeSlimString('node', node('n1', '192.168.40.1', '10.40.1.0/24')));
  await client.put(keys.node('n2')).value(encodeSlimString('node', node('n2', '192.168.40.2', '10.40.2.0/24')));
  for (const [name, on, ip] of pods) await client.put(keys.pod('default', name)).value(encodeSlimString('pod', pod(name, on, ip)));
  if (markers) for (const kind of RESOURCE_KINDS) await client.put(keys.synced(kind)).value(syncedMarkerValue(kind));
}

const ipcache = (dp: Datapath) => dp.maps.ipcacheHost.entries().map(([k, v]) => `${JSON.stringify(k)}=${JSON.stringify(v)}`).sort();

async function until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('AgentCore and the operator\'s sync markers', () => {
  const servers: EtcdServer[] = [];
  const clients: Etcd3[] = [];
  let proxy: CutProxy | undefined;
  afterAll(async () => {
    for (const c of clients) c.close();
    await proxy?.close();
    for (const s of servers) await s.stop();
  });

  it('waits for the sync before programming, keeps the maps when etcd is replaced by an empty one, then changes only what changed', async () => {
    const a = await startEtcd();
    servers.push(a);
    proxy = await startProxy(a.endpoint);
    const direct = createKvClient({ endpoints: [a.endpoint] });
    const agentClient = createKvClient({ endpoints: [proxy.endpoint], callTimeoutMs: 2000 });
    clients.push(direct, agentClient);
    const lines: string[] = [];
    const log = createLogger({ component: 'test', level: 'info', destination: { write: (l: string) => void lines.push(l) } });
    const waiting = (kind: string) => lines.filter((l) => l.includes(`waiting for the operator's sync of ${kind}`)).length;

    const pods: Array<[string, string, string]> = [['a', 'n1', '10.40.1.10'], ['b', 'n2', '10.40.2.10'], ['c', 'n2', '10.40.2.11'], ['d', 'n2', '10.40.2.12']];
    await operatorState(direct, pods, false); // records, but the operator has not finished
    const dp = memoryDatapath();
    const core = new AgentCore({ nodeName: 'n1', client: agentClient, datapath: dp, keys, clusterCidr: '10.40.0.0/16', waitForSync: true, log, batchMs: 0 });
    core.start();
    await until('the agent to say it waits', () => waiting('pods') === 1 && waiting('nodes') === 1);
    expect(core.isSynced).toBe(false);
    await until('its status to say so', () => (core.status().etcd.waitingForSync ?? []).length === 2);
    expect(dp.maps.ipcacheHost.count()).toBe(0);

    for (const kind of RESOURCE_KINDS) await direct.put(keys.synced(kind)).value(syncedMarkerValue(kind));
    await core.synced();
    const before = ipcache(dp);
    expect(before.length).toBe(4);

    // Disaster recovery: a new, empty etcd behind the agent's endpoint.
    const b = await startEtcd();
    servers.push(b);
    proxy.cut();
    proxy.retarget(b.endpoint);
    proxy.restore();
    await until('the agent to wait for the operator again', () => waiting('pods') === 2);
    await until('its status to say so', () => (core.status().etcd.waitingForSync ?? []).includes('pods'));
    await new Promise((r) => setTimeout(r, 500)); // room for a wrong prune to happen
    expect(ipcache(dp)).toEqual(before); // traffic keeps its state

    // The operator re-syncs the new etcd: pod c is gone, pod d moved to another IP.
    const direct2 = createKvClient({ endpoints: [b.endpoint] });
    clients.push(direct2);
    await operatorState(direct2, [['a', 'n1', '10.40.1.10'], ['b', 'n2', '10.40.2.10'], ['d', 'n2', '10.40.2.99']]);
    await until('the status to stop waiting', () => (core.status().etcd.waitingForSync ?? ['x']).length === 0);
    await until('the maps to follow the re-sync', () => ipcache(dp).some((e) => e.includes('10.40.2.99')) && !ipcache(dp).some((e) => e.includes('10.40.2.11')));
    const after = ipcache(dp);
    expect(after.filter((e) => !before.includes(e)).map((e) => e.split('=')[0])).toEqual([expect.stringContaining('10.40.2.99')]);
    expect(before.filter((e) => !after.includes(e)).map((e) => e.split('=')[0]).sort()).toEqual([expect.stringContaining('10.40.2.11'), expect.stringContaining('10.40.2.12')].sort());
    await core.stop();
  }, 60_000);
});
