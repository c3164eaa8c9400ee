import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKvClient, ETCD_USERS, keySchema, LeasedKeys, setupAuth, watchPrefix, type Etcd3 } from '../src/index.ts';

const keys = keySchema('auth/');
let etcd: EtcdServer;
let root: Etcd3;
const clients: Etcd3[] = [];
const as = (user: string, auth?: { username: string; password: string }) => {
  const c = createKvClient({ ...etcd.clientOptions(user), ...(auth ? { auth } : {}), callTimeoutMs: 5000 });
  clients.push(c);
  return c;
};

beforeAll(async () => {
  etcd = await startEtcd({ clientCertAuth: true });
  root = createKvClient(etcd.clientOptions());
  await root.put(keys.node('n1')).value('{}');
  const report = await setupAuth(root, keys, { nodes: ['n1', 'n2'], password: (u) => (u === ETCD_USERS.cli ? 'cli-secret' : undefined) });
  expect(report.enabled).toBe(true);
  expect(report.usersCreated).toEqual(expect.arrayContaining(['root', 'sluice-operator', 'sluice-agent-n1', 'sluice-agent-n2', 'sluice-health', 'sluice-cli']));
});

afterAll(async () => {
  for (const c of clients) c.close();
  root?.close();
  await etcd?.stop();
});

const denied = /permission denied/i;

describe('etcd auth: least privilege per component', () => {
  it('an agent reads the state but writes only its own node\'s agent and health keys', async () => {
    const agent = as(ETCD_USERS.agent('n1'));
    expect(await agent.get(keys.node('n1')).string()).toBe('{}');
    await expect(agent.put(keys.pod('default', 'web')).value('{}')).rejects.toThrow(denied);
    await expect(agent.put(keys.node('n1')).value('{"hijacked":true}')).rejects.toThrow(denied);
    await expect(agent.put(keys.health('n2')).value('{}')).rejects.toThrow(denied);
    await expect(agent.put(keys.agent('n2')).value('{}')).rejects.toThrow(denied);
    await expect(agent.delete().key(keys.health('n2')).exec()).rejects.toThrow(denied);
    await expect(agent.put(keys.synced('pods')).value('{}')).rejects.toThrow(denied);
    await agent.put(keys.agent('n1')).value('{"ok":true}');
    // Its keys on its own lease, as the agent publishes them (grant, put, keep-alive, revoke).
    const leased = new LeasedKeys({ client: agent, ttlSeconds: 5 });
    await leased.put(keys.health('n1'), '{"healthIP":"10.0.0.1"}');
    expect(await root.get(keys.health('n1')).string()).toBe('{"healthIP":"10.0.0.1"}');
    await leased.close();
    expect(await root.get(keys.health('n1')).string()).toBeNull();
    // And it can watch what it reads.
    const seen: string[] = [];
    const watch = watchPrefix(agent, keys.prefix('nodes'), { decode: (_k, b) => b.toString(), onEvent: (e) => e.type === 'upsert' && seen.push(e.key) });
    await watch.synced;
    await watch.stop();
    expect(seen).toEqual([keys.node('n1')]);
  });

  it('the operator writes the state prefixes but not the agents\' keys', async () => {
    const operator = as(ETCD_USERS.operator);
    await operator.put(keys.pod('default', 'web')).value('{}');
    await operator.put(keys.synced('pods')).value('{}');
    await operator.put(keys.operatorHeartbeat()).value('{}');
    await expect(operator.put(keys.health('n1')).value('{}')).rejects.toThrow(denied);
    await expect(operator.put(keys.nodeConfig('n1')).value('{}')).rejects.toThrow(denied);
    await expect(operator.put('elsewhere').value('x')).rejects.toThrow(denied);
  });

  it('the health service and the CLI only read; a password login works too', async () => {
    const health = as(ETCD_USERS.health);
    expect(await health.getAll().prefix(keys.prefix('nodes')).keys()).toEqual([keys.node('n1')]);
    await expect(health.put(keys.health('n1')).value('{}')).rejects.toThrow(denied);
    // What `sluice status` asks besides the records: etcd's own status.
    expect((await as(ETCD_USERS.cli).maintenance.status()).version).toMatch(/^3\./);
    await expect(as(ETCD_USERS.cli).put(keys.pod('default', 'x')).value('{}')).rejects.toThrow(denied);
    // A certificate with another CN, logging in as sluice-cli with its password: the password's user counts.
    const cli = as('someone-else', { username: ETCD_USERS.cli, password: 'cli-secret' });
    expect(await cli.get(keys.node('n1')).string()).toBe('{}');
    await expect(cli.put(keys.node('n1')).value('{}')).rejects.toThrow(denied);
    // A certificate whose CN names no user reads nothing.
    await expect(as('nobody').get(keys.node('n1')).string()).rejects.toThrow(/permission denied|user name not found|invalid/i);
  });

  it('converges when run again with a new node', async () => {
    const report = await setupAuth(root, keys, { nodes: ['n1', 'n2', 'n3'] });
    expect(report.usersCreated).toEqual(['sluice-agent-n3']);
    expect(report.revoked).toBe(0);
    const n3 = as(ETCD_USERS.agent('n3'));
    await n3.put(keys.health('n3')).value('{}');
    await expect(n3.put(keys.health('n1')).value('{}')).rejects.toThrow(denied);
  });
});
