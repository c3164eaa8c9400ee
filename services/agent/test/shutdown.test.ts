/**
 * A stopping agent ends within its grace period whatever etcd does: here etcd is frozen (SIGSTOP, so requests hang
 * instead of failing), and stop() still returns; a step that never ends is abandoned and named in the log.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { defaultPinDir } from '@sluice/datapath';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { createKvClient, keySchema } from '@sluice/kvstore';
import { createLogger } from '@sluice/log';
import { NetLab } from '@sluice/netns';
import { afterAll, describe, expect, it } from 'vitest';
import { runAgent } from '../src/index.ts';
import { stopInOrder } from '../src/shutdown.ts';

const lab = new NetLab();
let etcd: EtcdServer | undefined;
let stateDir: string | undefined;

afterAll(async () => {
  try {
    await lab.cleanup();
  } finally {
    await etcd?.stop().catch(() => undefined);
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  }
});

describe('agent shutdown', () => {
  it('returns within its grace period with etcd frozen', async () => {
    etcd = await startEtcd();
    const prefix = `shutdown-${lab.id}/`;
    const writer = createKvClient({ endpoints: [etcd.endpoint] });
    await writer.put(keySchema(prefix).node('sd-node')).value(JSON.stringify({ v: 1, name: 'sd-node', labels: {}, addresses: [{ type: 'InternalIP', ip: '192.168.230.1' }], podCIDRs: ['10.230.0.0/24'], ready: 'True', healthIPs: [] }));
    writer.close();
    const nodeNs = await lab.addNetns(lab.name('node'));
    const peer = await lab.addNetns(lab.name('peer'));
    await lab.addVeth({ ns: nodeNs, name: 'eth0' }, { ns: peer, name: 'eth0' });
    await lab.addAddr(nodeNs, 'eth0', '192.168.230.1/24');
    stateDir = mkdtempSync(join(tmpdir(), 'sluice-shutdown-test-'));
    const agent = await runAgent({
      nodeName: 'sd-node', etcd: [etcd.endpoint], rootPrefix: prefix, pinDir: lab.trackPinDir(defaultPinDir(`${lab.id}-sd`)), netns: nodeNs, uplink: 'eth0',
      routing: 'native', hostRouting: 'auto', stateDir, apiSocket: join(stateDir, 'agent.sock'), healthPort: 0, clusterCidr: '10.230.0.0/16',
      log: createLogger({ component: 'agent', level: 'silent' }),
    });
    await agent.core.synced();
    await etcd.pause('SIGSTOP');
    // Returns (this test's timeout would catch a hang), and the datapath fds are closed: the maps stay pinned.
    await agent.stop({ graceMs: 1500 });
    expect(() => agent.datapath.maps.endpoints.count()).toThrow();
    await etcd.kill();
  }, 60_000);

  it('abandons a step that never ends, names it and the ones after it', async () => {
    const lines: Array<{ msg?: string; abandoned?: string[] }> = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as { msg?: string; abandoned?: string[] });
        done();
      },
    });
    const log = createLogger({ component: 'test', level: 'info', destination });
    const ran: string[] = [];
    const abandoned = await stopInOrder([
      ['first', () => void ran.push('first')],
      ['failing', () => Promise.reject(new Error('boom'))],
      ['stuck on etcd', () => new Promise(() => undefined)],
      ['after', () => void ran.push('after')],
    ], log, 200);
    expect(abandoned).toEqual(['stuck on etcd', 'after']);
    expect(ran).toEqual(['first']);
    await new Promise((r) => setTimeout(r, 50));
    expect(lines.find((l) => l.msg?.startsWith('shutdown grace period over'))?.abandoned).toEqual(['stuck on etcd', 'after']);
    expect(await stopInOrder([['quick', () => undefined]], log, 200)).toEqual([]);
  });
});
