/**
 * List pages follow the size of a kind's objects: a page of 500 12 KB Nodes (6 MB of JSON, far more once parsed) was
 * the operator's memory peak during an initial sync. A small server records the `limit` of each list request.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { realisticNode } from '@sluice/kube-objects';
import { keySchema } from '@sluice/kvstore';
import { createLogger } from '@sluice/log';
import { createRegistry } from '@sluice/metrics';
import { loadKubeConfig } from '../src/kube-client.ts';
import { KindMirror, mirrorMetrics } from '../src/mirror.ts';
import { mirroredResources } from '../src/resources.ts';

describe('list pages', () => {
  const total = 400;
  // Nodes of 12 KB or more, as kubelets report them (images, conditions, managedFields).
  const nodes = Array.from({ length: total }, (_, i) => {
    const node = realisticNode({ name: `node-${String(i).padStart(4, '0')}`, internalIP: `172.20.${i >> 8}.${i & 255}`, podCIDR: `10.${i >> 8}.${i & 255}.0/24` });
    node.metadata!.annotations = { ...node.metadata!.annotations, padding: 'x'.repeat(Math.max(0, 12_000 - JSON.stringify(node).length)) };
    return JSON.stringify(node);
  });
  const limits: number[] = [];
  const pageBytes: number[] = [];
  let server: Server;

  beforeAll(async () => {
    server = createServer((req, res) => {
      const url = new URL(req.url!, 'http://x');
      res.setHeader('content-type', 'application/json');
      if (url.searchParams.get('watch') === 'true') return void res.writeHead(200); // no changes
      const limit = Number(url.searchParams.get('limit'));
      const from = Number(url.searchParams.get('continue') || 0);
      limits.push(limit);
      const to = Math.min(total, from + limit);
      const body = `{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"7"${to < total ? `,"continue":"${to}"` : ''}},"items":[${nodes.slice(from, to).join(',')}]}`;
      if (to < total) pageBytes.push(Buffer.byteLength(body));
      res.end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('hold about 512 KB of large objects, never more objects than the page size, and list everything', async () => {
    const upserts = new Map<string, string>();
    const mirror = new KindMirror({
      config: loadKubeConfig({ server: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }),
      resource: mirroredResources(keySchema()).find((r) => r.kind === 'nodes')!,
      sink: { upsert: (key, value) => upserts.set(key, value), delete: (key) => upserts.delete(key) },
      log: createLogger({ component: 'test', level: 'silent' }),
      metrics: mirrorMetrics(createRegistry()),
      pageSize: 500,
    });
    mirror.start();
    await mirror.synced;
    await mirror.stop();
    expect(upserts.size).toBe(total);
    // A small first page, then pages of about 512 KB (the last one holds what is left).
    expect(limits[0]).toBe(50);
    expect(limits.length).toBeGreaterThan(5);
    for (const bytes of pageBytes.slice(1)) {
      expect(bytes).toBeGreaterThan(400 * 1024);
      expect(bytes).toBeLessThan(640 * 1024);
    }
    expect(Math.max(...limits.slice(1))).toBeLessThan(50);
  });
});
