import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHealthClient, type HealthClient } from '@sluice/health-api';
import { freePort, startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { createKvClient, keySchema, RECORD_VERSION, syncedMarkerValue, type Etcd3, type HealthEndpointRecord } from '@sluice/kvstore';
import { createLogger } from '@sluice/log';
import { EtcdNodeSource } from '../src/index.ts';
import { encodeSlimString, SCHEMA_VERSION, type SlimNode } from '@sluice/slim';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const keys = keySchema();
const node = (i: number): SlimNode => ({
  v: SCHEMA_VERSION,
  name: `node-${i}`,
  labels: {},
  addresses: [{ type: 'InternalIP', ip: `10.0.0.${i}` }],
  podCIDRs: [`10.${100 + i}.0.0/24`],
  ready: 'True',
  healthIPs: [`10.${100 + i}.0.2`],
});

const record = (i: number): HealthEndpointRecord => ({ v: RECORD_VERSION, node: `node-${i}`, nodeIP: `10.0.0.${i}`, agentPort: 4240 });

let etcd: EtcdServer;
let kv: Etcd3;
let service: ChildProcess | undefined;
let client: HealthClient;
let stderr = '';

beforeAll(async () => {
  etcd = await startEtcd();
  kv = createKvClient({ endpoints: [etcd.endpoint] });
  for (const i of [1, 2, 3, 5]) await kv.put(keys.node(`node-${i}`)).value(encodeSlimString('node', node(i)));
  // As the operator does at the end of its sync: the service takes the node list for complete only after this.
  await kv.put(keys.synced('nodes')).value(syncedMarkerValue('nodes'));
  // node-5 has no agent (no health record): it is still a member of the health view, its agent "not running".
  for (const i of [1, 3]) await kv.put(keys.health(`node-${i}`)).value(JSON.stringify(record(i)));
  await kv.put(keys.health('node-2')).value(JSON.stringify({ ...record(2), healthIP: '10.102.0.9', healthPort: 4240 }));
  const port = await freePort();
  // node --import tsx: one process, so that killing it leaves nothing behind (the tsx CLI would fork a child).
  service = spawn(process.execPath, ['--import', 'tsx', `${root}services/health/src/main.ts`, '--listen', `127.0.0.1:${port}`, '--etcd-endpoints', etcd.endpoint, '--insecure', '--metrics-port', '0'], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  service.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  client = createHealthClient(`127.0.0.1:${port}`, { deadlineMs: 2000 });
});
afterAll(async () => {
  client?.close();
  service?.kill('SIGKILL');
  kv?.close();
  await etcd?.stop();
});

describe('sluice-health with etcd', () => {
  it('finds every node through etcd, with the health endpoint address, and follows changes', async () => {
    await expect
      .poll(async () => (await client.getClusterHealth({ summaryOnly: true }).catch(() => undefined))?.summary.total, { timeout: 30_000, interval: 200 })
      .toBe(4);
    expect(await client.getNodeHealth('node-1')).toMatchObject({ host: { ip: '10.0.0.1' }, endpoint: { ip: '10.101.0.2' }, reachability: 'REACHABILITY_UNKNOWN' });
    expect((await client.getNodeHealth('node-2')).endpoint.ip).toBe('10.102.0.9');
    // No agent, but its host has answered for a while (11 s): a member, shown as such.
    for (const ago of [11_000, 0]) {
      await client.reportProbes({ reporter: 'node-1', results: [{ target: 'node-5', kind: 'PROBE_KIND_HOST_ICMP', ip: '10.0.0.5', ok: true, rttUs: 50, error: '', timeUnixMs: Date.now() - ago }] });
    }
    expect(await client.getNodeHealth('node-5')).toMatchObject({ reachability: 'REACHABILITY_REACHABLE', agent: 'AGENT_STATE_NOT_RUNNING' });
    await kv.delete().key(keys.node('node-3'));
    await kv.put(keys.node('node-4')).value(encodeSlimString('node', node(4)));
    await kv.put(keys.health('node-4')).value(JSON.stringify(record(4)));
    await expect.poll(async () => (await client.getClusterHealth()).nodes.map((n) => n.name), { timeout: 10_000 }).toEqual(['node-1', 'node-2', 'node-4', 'node-5']);
    await expect(client.getNodeHealth('node-3')).rejects.toMatchObject({ code: 5 });
    await client.reportProbes({ reporter: 'node-1', results: [{ target: 'node-4', kind: 'PROBE_KIND_HOST_ICMP', ip: '10.0.0.4', ok: true, rttUs: 50, error: '', timeUnixMs: Date.now() }] });
    expect((await client.getNodeHealth('node-4')).reachability).toBe('REACHABILITY_REACHABLE');
    expect(stderr).toContain('node list loaded from etcd');
  });

  it('marks the nodes whose agent published no health record', async () => {
    const seen: Array<Array<[string, boolean | undefined]>> = [];
    const source = new EtcdNodeSource({ client: kv, debounceMs: 10 });
    await source.start((nodes) => seen.push(nodes.map((n): [string, boolean | undefined] => [n.name, n.agent]).sort()));
    await source.stop();
    expect(seen[0]).toContainEqual(['node-5', false]);
    expect(seen[0]).toContainEqual(['node-1', true]);
  });

  it('waits for the operator\'s sync marker of the nodes before its first node list', async () => {
    const other = keySchema('health-sync/');
    await kv.put(other.node('node-1')).value(encodeSlimString('node', node(1)));
    const lines: string[] = [];
    const logger = createLogger({ component: 'test', level: 'info', destination: { write: (line: string) => void lines.push(line) } });
    const seen: string[][] = [];
    const source = new EtcdNodeSource({ client: kv, root: 'health-sync/', debounceMs: 10, logger });
    const started = source.start((nodes) => seen.push(nodes.map((n) => n.name)));
    await expect.poll(() => lines.some((l) => l.includes("waiting for the operator's sync of nodes")), { timeout: 10_000 }).toBe(true);
    expect(seen).toEqual([]); // listed, but not taken for complete
    await kv.put(other.synced('nodes')).value(syncedMarkerValue('nodes'));
    await started;
    expect(seen[0]).toEqual(['node-1']);
    await source.stop();
  });
});
