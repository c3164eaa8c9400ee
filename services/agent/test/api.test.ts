/**
 * The local API the CNI plugin calls: a 0600 socket, callers checked by SO_PEERCRED (root or an allowed uid; another
 * uid is cut off even when the socket's mode would let it connect), registrations validated (IP inside this node's
 * podCIDR and not another's, interface an existing veth with that ifindex, a bounded number of endpoints), and the
 * state file written once for a burst of changes.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memoryDatapath, type Datapath } from '@sluice/datapath';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { createKvClient, keySchema, type Etcd3 } from '@sluice/kvstore';
import { createLogger } from '@sluice/log';
import { NetLab, linkInfo } from '@sluice/netns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentCore, LocalEndpointStore, startAgentApi, type AgentApi } from '../src/index.ts';

const log = createLogger({ component: 'test', level: 'silent' });
const keys = keySchema(`agent-api-${process.pid}/`);
const lab = new NetLab();
let etcd: EtcdServer;
let client: Etcd3;
let dir: string;
let nodeNs: string;
let core: AgentCore;
let dp: Datapath;
let store: LocalEndpointStore;
let api: AgentApi;
let veth: { ifname: string; ifindex: number; mac: string };
const socket = () => join(dir, 'agent.sock');

const node = (name: string, ip: string, cidr: string) => JSON.stringify({ v: 1, name, labels: {}, addresses: [{ type: 'InternalIP', ip }], podCIDRs: [cidr], ready: 'True', healthIPs: [] });
const pod = (name: string, nodeName: string, ip: string) => JSON.stringify({ v: 1, namespace: 'default', name, uid: name, nodeName, hostIP: '', podIPs: [ip], hostNetwork: false, phase: 'Running', labels: {}, deleting: false, ports: [] });

function call(method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket(), method, path, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} }));
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

/** Connects to the socket as another uid (a child process) and reports what happened to its request. */
function callAs(uid: number): Promise<string> {
  const script = `
    const req = require('node:http').request({ socketPath: ${JSON.stringify(socket())}, path: '/v1/endpoints' }, (res) => { console.log('status ' + res.statusCode); res.resume(); });
    req.on('error', (e) => console.log('error ' + e.code));
    req.end();`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { uid, gid: uid, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.on('error', reject);
    child.on('close', () => resolve(out.trim()));
  });
}

const ep = (over: Record<string, unknown> = {}) => ({ id: 'c1', ip: '10.210.1.10', hostIfname: veth.ifname, hostIfindex: veth.ifindex, hostMac: veth.mac, mac: '02:00:00:00:00:02', ...over });

beforeAll(async () => {
  etcd = await startEtcd();
  client = createKvClient({ endpoints: [etcd.endpoint] });
  await client.put(keys.node('n1')).value(node('n1', '192.168.210.1', '10.210.1.0/24'));
  await client.put(keys.node('n2')).value(node('n2', '192.168.210.2', '10.210.2.0/24'));
  await client.put(keys.pod('default', 'elsewhere')).value(pod('elsewhere', 'n2', '10.210.1.50'));
  dir = mkdtempSync(join(tmpdir(), 'sluice-api-test-'));
  chmodSync(dir, 0o711); // lets another uid reach the socket, so that only the socket's own checks stop it
  nodeNs = await lab.addNetns(lab.name('node'));
  const podNs = await lab.addNetns(lab.name('pod'));
  await lab.addVeth({ ns: nodeNs, name: 'lxc1' }, { ns: podNs, name: 'eth0' });
  veth = await linkInfo(nodeNs, 'lxc1');
  dp = memoryDatapath();
  core = new AgentCore({ nodeName: 'n1', client, datapath: dp, keys, clusterCidr: '10.210.0.0/16', log, refreshIntervalMs: 0 });
  core.start();
  await core.synced();
  store = new LocalEndpointStore(join(dir, 'state'));
  api = await startAgentApi({ core, store, socket: socket(), info: { pinDir: '/sys/fs/bpf/sluice/none', netns: nodeNs }, maxEndpoints: 2, allow: { uids: [65533] }, log });
});

afterAll(async () => {
  try {
    await api?.close();
    await core?.stop();
    client?.close();
  } finally {
    await lab.cleanup();
    await etcd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
});

describe('agent local API', () => {
  it('creates its socket 0600', () => {
    expect(statSync(socket()).mode & 0o777).toBe(0o600);
  });

  it('refuses a caller that is neither root nor allowed, even when the socket mode lets it connect', async () => {
    expect(await callAs(65534)).toMatch(/^error (EACCES|EPERM)/); // the mode alone stops it
    chmodSync(socket(), 0o666);
    try {
      expect(await callAs(65534)).toMatch(/^error (ECONNRESET|EPIPE)/); // the peer check cuts it off
      expect(await callAs(65533)).toBe('status 200'); // an allowed uid
    } finally {
      chmodSync(socket(), 0o600);
    }
  });

  it('registers a valid endpoint and programs it', async () => {
    const r = await call('PUT', '/v1/endpoints/c1', ep());
    expect(r).toEqual({ status: 200, json: { programmed: true } });
    expect(dp.maps.endpoints.lookup({ ip: '10.210.1.10' })?.ifindex).toBe(veth.ifindex);
    expect(JSON.parse(readFileSync(join(dir, 'state', 'endpoints.json'), 'utf8')).endpoints).toHaveLength(1);
  });

  it.each([
    ['an IP outside this node\'s podCIDR', { id: 'c2', ip: '10.210.2.10' }, 409, /outside this node's podCIDRs/],
    ['an IP held by a pod of another node', { id: 'c2', ip: '10.210.1.50' }, 409, /belongs to a pod on node n2/],
    ['an IP held by another endpoint', { id: 'c2' }, 409, /already used by endpoint c1/],
    ['an interface that does not exist', { id: 'c2', ip: '10.210.1.11', hostIfname: 'nosuch0' }, 400, /does not exist/],
    ['an interface that is not a veth', { id: 'c2', ip: '10.210.1.11', hostIfname: 'lo', hostIfindex: 1 }, 400, /not a veth/],
    ['a veth with another ifindex', { id: 'c2', ip: '10.210.1.11', hostIfindex: 9999 }, 400, /ifindex/],
  ])('refuses %s', async (_what, over, status, error) => {
    const r = await call('PUT', '/v1/endpoints/c2', ep(over));
    expect(r.status).toBe(status);
    expect(String(r.json.error)).toMatch(error);
    expect(store.get('c2')).toBeUndefined();
  });

  it('bounds the number of endpoints', async () => {
    expect((await call('PUT', '/v1/endpoints/c2', ep({ id: 'c2', ip: '10.210.1.11' }))).status).toBe(200);
    const r = await call('PUT', '/v1/endpoints/c3', ep({ id: 'c3', ip: '10.210.1.12' }));
    expect(r.status).toBe(429);
    expect((await call('PUT', '/v1/endpoints/c2', ep({ id: 'c2', ip: '10.210.1.13' }))).status).toBe(200); // an update is not a new one
    expect((await call('DELETE', '/v1/endpoints/c2')).status).toBe(200);
    expect(dp.maps.endpoints.lookup({ ip: '10.210.1.13' })).toBeUndefined();
  });
});

describe('LocalEndpointStore', () => {
  it('writes a burst of changes in one save, never through a planted file', async () => {
    const stateDir = join(dir, 'burst');
    const s = new LocalEndpointStore(stateDir);
    expect(statSync(stateDir).mode & 0o777).toBe(0o700);
    for (let i = 1; i <= 50; i++) s.put({ id: `e${i}`, ip: `10.210.1.${i}`, hostIfname: `lxc${i}`, hostIfindex: i, hostMac: '02:00:00:00:00:01', mac: '02:00:00:00:00:02' });
    s.delete('e50');
    await s.saved();
    expect(s.saves).toBe(1);
    expect(new LocalEndpointStore(stateDir).all()).toHaveLength(49);
  });
});
