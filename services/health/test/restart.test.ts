/**
 * A restarted health service: the probers' report streams fail, they reopen them on their next flush, and the new
 * service rebuilds the same view from the reports alone (it persists nothing).
 */
import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { createHealthClient } from '@sluice/health-api';
import { createLogger } from '@sluice/log';
import { healthServiceSink, Prober, startHealthResponder, type HealthResponder, type Peer } from '@sluice/prober';
import { Aggregator, startHealthServer, type HealthServer } from '../src/index.ts';

const socket = `/tmp/sl-health-restart-${process.pid}.sock`;
const quiet = createLogger({ component: 'test', level: 'silent' });
const cleanup: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const step of cleanup.reverse()) await step();
  rmSync(socket, { force: true });
});

async function serve(): Promise<HealthServer> {
  rmSync(socket, { force: true });
  const aggregator = new Aggregator();
  aggregator.setNodes(['node-a', 'node-b', 'node-c'].map((name, i) => ({ name, hostIP: `127.0.0.${i + 11}`, endpointIP: '' })));
  return startHealthServer({ aggregator, address: `unix://${socket}`, insecure: true, logger: quiet });
}

describe('health service restart', () => {
  it('is rebuilt from the reports that follow, through reopened report streams', async () => {
    const responders: HealthResponder[] = [];
    const peers: Peer[] = [];
    for (const [i, name] of ['node-a', 'node-b', 'node-c'].entries()) {
      const responder = await startHealthResponder({ node: name, host: `127.0.0.${i + 11}` });
      responders.push(responder);
      peers.push({ name, hostIP: `127.0.0.${i + 11}`, agentPort: responder.port });
    }
    cleanup.push(() => Promise.all(responders.map((r) => r.close())).then(() => undefined));
    let server = await serve();
    cleanup.push(() => server.stop(200));
    const agentClient = createHealthClient(`unix://${socket}`);
    cleanup.push(() => agentClient.close());
    for (const peer of peers) {
      const sink = healthServiceSink(agentClient);
      const prober = new Prober({ node: peer.name, peers: () => peers, sink, minIntervalMs: 300, flushMs: 100, logger: quiet });
      prober.start();
      cleanup.push(async () => {
        await prober.stop();
        sink.close();
      });
    }
    const user = createHealthClient(`unix://${socket}`, { deadlineMs: 2000 });
    cleanup.push(() => user.close());
    const allReachable = async () => (await user.getClusterHealth().catch(() => undefined))?.summary.reachable === 3;
    await expect.poll(allReachable, { timeout: 20_000, interval: 200 }).toBe(true);

    await server.stop(200);
    server = await serve();
    await expect.poll(allReachable, { timeout: 20_000, interval: 200 }).toBe(true);
    // Everything the new service knows came in on report streams the probers opened after the restart.
    expect(server.stats().reports).toBeGreaterThan(0);
  });
});
