/**
 * Kernel routes through the reconciler, inside a test namespace: only routes with Sluice's protocol number are
 * replaced or deleted (the default route and a static route to a podCIDR are left alone, the row stays in error
 * until the foreign route is gone), one failing route does not stop the others or the deletions, and a route
 * deleted with `ip route del` comes back within the refresh interval, counted as drift; a live routing switch
 * (setMode, then a full pass) moves every route between the uplink and the VXLAN device.
 */
import { createLogger } from '@sluice/log';
import { createRegistry } from '@sluice/metrics';
import { NetLab, ip } from '@sluice/netns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Reconciler, RoutesTarget, ROUTE_PROTO, Table, type RouteRow } from '../src/index.ts';

const log = createLogger({ component: 'test', level: 'silent' });
const lab = new NetLab();
let ns: string;

interface R { dst: string; gateway?: string; protocol?: string | number }
const routes = async (): Promise<Map<string, R>> => new Map((JSON.parse(await ip(ns, ['-j', 'route', 'show'])) as R[]).map((r) => [r.dst, r]));

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

beforeAll(async () => {
  ns = await lab.addNetns(lab.name('rt'));
  const peer = await lab.addNetns(lab.name('peer'));
  await lab.addVeth({ ns, name: 'eth0' }, { ns: peer, name: 'eth0' });
  await lab.addAddr(ns, 'eth0', '192.168.220.1/24');
  await ip(ns, ['route', 'add', 'default', 'via', '192.168.220.254', 'dev', 'eth0']);
  await ip(ns, ['route', 'add', '10.220.5.0/24', 'via', '192.168.220.9', 'dev', 'eth0', 'proto', 'static']);
  await ip(ns, ['route', 'add', '10.220.9.0/24', 'via', '192.168.220.9', 'dev', 'eth0', 'proto', String(ROUTE_PROTO)]); // a stale one of ours
});

afterAll(async () => {
  await lab.cleanup();
});

describe('routes reconciler', () => {
  it('owns only its protocol\'s routes, isolates failures, repairs a deleted route', async () => {
    const table = new Table<RouteRow>();
    const registry = createRegistry();
    const reconciler = new Reconciler({ target: new RoutesTarget({ netns: ns, mode: 'native', uplink: 'eth0', vxlan: 'vx0' }), desired: table, log, registry, refreshIntervalMs: 300, backoff: { minMs: 20, maxMs: 100 } });
    table.follow(reconciler);
    try {
      table.set('10.220.2.0/24', { nodeIp: '192.168.220.2' });
      table.set('10.220.3.0/24', { nodeIp: '192.168.220.3' });
      table.set('10.220.4.0/24', { nodeIp: '10.99.99.99' }); // not on-link: the kernel refuses it
      table.set('10.220.5.0/24', { nodeIp: '192.168.220.5' }); // a static route holds it
      table.set('0.0.0.0/0', { nodeIp: '192.168.220.6' }); // never asked by the tables, refused here too
      await reconciler.start();
      let r = await routes();
      expect(r.get('10.220.2.0/24')).toMatchObject({ gateway: '192.168.220.2', protocol: String(ROUTE_PROTO) });
      expect(r.get('10.220.3.0/24')).toMatchObject({ gateway: '192.168.220.3', protocol: String(ROUTE_PROTO) });
      expect(r.has('10.220.4.0/24')).toBe(false);
      expect(r.get('10.220.5.0/24')).toMatchObject({ gateway: '192.168.220.9', protocol: 'static' });
      expect(r.get('default')).toMatchObject({ gateway: '192.168.220.254' });
      expect(r.has('10.220.9.0/24')).toBe(false); // pruned
      expect(reconciler.rowStatus('10.220.4.0/24')).toMatchObject({ state: 'error' });
      expect(reconciler.rowStatus('10.220.5.0/24')).toMatchObject({ state: 'error', error: expect.stringMatching(/did not create/) });
      expect(reconciler.rowStatus('0.0.0.0/0')).toMatchObject({ state: 'error' });

      // Drift: our route deleted behind our back comes back, and is counted.
      await ip(ns, ['route', 'del', '10.220.2.0/24']);
      await until('the deleted route to come back', async () => (await routes()).has('10.220.2.0/24'));
      await until('the drift to be counted', () => reconciler.status().driftRepaired >= 1);
      expect(await registry.getSingleMetricAsString('sluice_agent_reconciler_drift_repaired_total')).toMatch(/reconciler="routes"} [1-9]/);

      // A row deleted from the table: its route goes; the failing rows never stopped that.
      table.delete('10.220.3.0/24');
      table.delete('0.0.0.0/0');
      await reconciler.flush();
      r = await routes();
      expect(r.has('10.220.3.0/24')).toBe(false);
      expect(r.get('default')).toMatchObject({ gateway: '192.168.220.254' });

      // The foreign route goes away: the retried row lands.
      await ip(ns, ['route', 'del', '10.220.5.0/24', 'proto', 'static']);
      await until('the retried row to land', () => reconciler.rowStatus('10.220.5.0/24')?.state === 'done');
      expect((await routes()).get('10.220.5.0/24')).toMatchObject({ gateway: '192.168.220.5', protocol: String(ROUTE_PROTO) });
    } finally {
      await reconciler.stop();
    }
  });

  it('tunnel mode: podCIDRs via the VXLAN device; a route of ours pointing elsewhere is rewritten at start', async () => {
    await lab.addVxlan(ns, 'vx0');
    await ip(ns, ['route', 'replace', '10.221.2.0/24', 'via', '192.168.220.2', 'dev', 'eth0', 'proto', String(ROUTE_PROTO)]); // left by native mode
    const table = new Table<RouteRow>();
    const reconciler = new Reconciler({ target: new RoutesTarget({ netns: ns, mode: 'tunnel', uplink: 'eth0', vxlan: 'vx0' }), desired: table, log, refreshIntervalMs: 0 });
    table.follow(reconciler);
    try {
      table.set('10.221.2.0/24', { nodeIp: '192.168.220.2' });
      table.set('10.221.3.0/24', { nodeIp: '192.168.220.3' });
      await reconciler.start();
      const r = (JSON.parse(await ip(ns, ['-j', 'route', 'show', 'proto', String(ROUTE_PROTO)])) as Array<{ dst: string; dev: string; gateway?: string }>).map((x) => [x.dst, x.dev, x.gateway ?? '']);
      expect(r.filter(([dst]) => dst!.startsWith('10.221.')).sort()).toEqual([['10.221.2.0/24', 'vx0', ''], ['10.221.3.0/24', 'vx0', '']]);
      expect(reconciler.status().rows).toEqual({ done: 2, pending: 0, error: 0 });
    } finally {
      await reconciler.stop();
    }
  });

  it('a live routing switch: after setMode a full pass moves every route (tunnel → native → tunnel)', async () => {
    const target = new RoutesTarget({ netns: ns, mode: 'tunnel', uplink: 'eth0', vxlan: 'vx0' });
    const table = new Table<RouteRow>();
    const reconciler = new Reconciler({ target, desired: table, log, refreshIntervalMs: 0 });
    table.follow(reconciler);
    const ours = async () => (JSON.parse(await ip(ns, ['-j', 'route', 'show', 'proto', String(ROUTE_PROTO)])) as Array<{ dst: string; dev: string; gateway?: string }>).filter((x) => x.dst.startsWith('10.222.')).map((x) => [x.dst, x.dev, x.gateway ?? '']).sort();
    try {
      table.set('10.222.2.0/24', { nodeIp: '192.168.220.2' });
      table.set('10.222.3.0/24', { nodeIp: '192.168.220.3' });
      await reconciler.start();
      expect(await ours()).toEqual([['10.222.2.0/24', 'vx0', ''], ['10.222.3.0/24', 'vx0', '']]);
      target.setMode('native');
      await reconciler.fullPass();
      expect(target.mode).toBe('native');
      expect(await ours()).toEqual([['10.222.2.0/24', 'eth0', '192.168.220.2'], ['10.222.3.0/24', 'eth0', '192.168.220.3']]);
      target.setMode('tunnel');
      await reconciler.fullPass();
      expect(await ours()).toEqual([['10.222.2.0/24', 'vx0', ''], ['10.222.3.0/24', 'vx0', '']]);
      expect(reconciler.status().rows).toEqual({ done: 2, pending: 0, error: 0 });
    } finally {
      await reconciler.stop();
    }
  });
});
