import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReportProbesRequest } from '@sluice/health-api';
import { httpProbe, parsePingRtt, ping, Prober, startHealthResponder, type HealthResponder } from '../src/index.ts';

let responder: HealthResponder;
beforeAll(async () => {
  responder = await startHealthResponder({ node: 'node-a', host: '127.0.0.1' });
});
afterAll(async () => {
  await responder.close();
});

describe('probes', () => {
  it('parses the RTT out of iputils ping output', () => {
    expect(parsePingRtt('64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.045 ms')).toBe(45);
    expect(parsePingRtt('64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=12.5 ms')).toBe(12500);
    expect(parsePingRtt('1 packets transmitted, 0 received, 100% packet loss')).toBeUndefined();
  });

  it('pings the loopback address', async () => {
    const outcome = await ping('127.0.0.1');
    expect(outcome.ok).toBe(true);
    expect(outcome.error).toBe('');
  });

  it('refuses to ping something that is not an IP', async () => {
    const outcome = await ping('localhost; rm -rf /');
    // The refusal itself, not any failure (a ping that ran and found no host would fail too).
    expect(outcome).toEqual({ ok: false, rttUs: 0, error: 'not an IP address: localhost; rm -rf /' });
  });

  it('gets 200 from a health responder and fails on a closed port or a wrong path', async () => {
    const ok = await httpProbe('127.0.0.1', responder.port);
    expect(ok).toMatchObject({ ok: true, error: '' });
    expect(ok.rttUs).toBeGreaterThan(0);
    const closed = await startHealthResponder({ node: 'gone', host: '127.0.0.1' });
    const port = closed.port;
    await closed.close();
    expect(await httpProbe('127.0.0.1', port)).toMatchObject({ ok: false, error: 'Connection refused' });
    expect(await httpProbe('127.0.0.1', responder.port, { path: '/nope' })).toMatchObject({ ok: false, error: 'HTTP 404' });
  });
});

describe('Prober', () => {
  it('probes its peers on every advertised path and reports the results through the sink', async () => {
    const reports: ReportProbesRequest[] = [];
    // The whole of 127.0.0.0/8 is local: one responder per "node" address, like an agent and its health endpoint.
    const host = await startHealthResponder({ node: 'node-b', host: '127.0.0.2' });
    const endpoint = await startHealthResponder({ node: 'node-b', host: '127.0.0.3' });
    const prober = new Prober({
      node: 'node-a',
      peers: () => [
        { name: 'node-a', hostIP: '127.0.0.1', agentPort: responder.port },
        { name: 'node-b', hostIP: '127.0.0.2', agentPort: host.port, endpointIP: '127.0.0.3', endpointPort: endpoint.port },
      ],
      sink: async (report) => void reports.push(report),
      minIntervalMs: 200,
      flushMs: 20,
    });
    prober.start();
    await expect.poll(() => reports.flatMap((r) => r.results).length, { timeout: 10_000 }).toBeGreaterThanOrEqual(4);
    await prober.stop();
    await host.close();
    await endpoint.close();
    const results = reports.flatMap((r) => r.results);
    expect(new Set(reports.map((r) => r.reporter))).toEqual(new Set(['node-a']));
    expect(new Set(results.map((r) => r.target))).toEqual(new Set(['node-b']));
    expect(new Set(results.map((r) => r.kind))).toEqual(new Set(['PROBE_KIND_HOST_ICMP', 'PROBE_KIND_HOST_HTTP', 'PROBE_KIND_ENDPOINT_ICMP', 'PROBE_KIND_ENDPOINT_HTTP']));
    expect(results.every((r) => r.ok)).toBe(true);
    expect(prober.currentPlan.fanout).toBe(1);
  });

  it('keeps results while the sink fails and delivers them once it recovers', async () => {
    let failing = true;
    const delivered: ReportProbesRequest[] = [];
    const prober = new Prober({
      node: 'node-a',
      peers: () => [{ name: 'node-b', hostIP: '127.0.0.2' }],
      sink: async (report) => {
        if (failing) throw new Error('service down');
        delivered.push(report);
      },
      minIntervalMs: 100,
      flushMs: 10,
      logger: (await import('@sluice/log')).createLogger({ component: 'test', level: 'silent' }),
    });
    prober.start();
    await new Promise((resolve) => setTimeout(resolve, 400));
    failing = false;
    await expect.poll(() => delivered.length, { timeout: 10_000 }).toBeGreaterThan(0);
    await prober.stop();
    expect(delivered[0]!.results.length).toBeGreaterThan(1);
  });

  it('warns once while the sink keeps failing, and once when it works again', async () => {
    const { Writable } = await import('node:stream');
    const lines: Array<{ level: number; msg: string }> = [];
    const destination = new Writable({ write(chunk: Buffer, _e, done) { for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l)); done(); } });
    let failing = true;
    let attempts = 0;
    const prober = new Prober({
      node: 'node-a',
      peers: () => [{ name: 'node-b', hostIP: '127.0.0.2' }],
      sink: async () => {
        attempts++;
        if (failing) throw new Error('service down');
      },
      minIntervalMs: 100,
      flushMs: 10,
      logger: (await import('@sluice/log')).createLogger({ component: 'test', level: 'info', destination }),
    });
    prober.start();
    await expect.poll(() => attempts, { timeout: 10_000 }).toBeGreaterThanOrEqual(4);
    failing = false;
    await expect.poll(() => lines.some((l) => l.msg === 'reporting probes works again'), { timeout: 10_000 }).toBe(true);
    await prober.stop();
    expect(lines.filter((l) => l.msg.startsWith('reporting probes failed'))).toHaveLength(1);
    expect(lines.filter((l) => l.msg === 'reporting probes works again')).toHaveLength(1);
  });

  it('re-probes a peer whose round failed in the next round\'s re-probe slot, and stops once it answers', async () => {
    const probed: Array<{ round: number; target: string }> = [];
    let broken = true;
    const peers = ['node-a', 'node-b', 'node-c', 'node-d', 'node-e'].map((name, i) => ({ name, hostIP: `127.0.1.${i + 1}` }));
    const prober = new Prober({
      node: 'node-a',
      peers: () => peers,
      sink: async () => undefined,
      minIntervalMs: 300,
      maxProbeRate: 1000,
      icmp: async (ip) => {
        const target = peers.find((p) => p.hostIP === ip)!.name;
        probed.push({ round: Math.floor(Date.now() / prober.currentPlan.intervalMs), target });
        return broken && target === 'node-e' ? { ok: false, rttUs: 0, error: 'Connection timed out' } : { ok: true, rttUs: 5, error: '' };
      },
    });
    prober.start();
    await expect.poll(() => new Set(probed.filter((p) => p.target === 'node-e').map((p) => p.round)).size, { timeout: 20_000, interval: 50 }).toBeGreaterThanOrEqual(4);
    broken = false;
    const fixedAt = probed.length;
    await expect.poll(() => probed.length - fixedAt, { timeout: 20_000, interval: 50 }).toBeGreaterThanOrEqual(40);
    await prober.stop();
    expect(prober.currentPlan).toMatchObject({ fanout: 3, recheckSlots: 1 });
    // While node-e failed, every round after its first failure probed it (the ring alone skips it in some rounds).
    const failing = probed.slice(0, fixedAt).filter((p) => p.target === 'node-e').map((p) => p.round);
    const first = Math.min(...failing);
    const last = Math.max(...failing);
    for (let r = first + 1; r <= last; r++) expect(failing).toContain(r);
    // Never more than the fanout plus the re-probe slots in one round.
    const perRound = new Map<number, number>();
    for (const p of probed) perRound.set(p.round, (perRound.get(p.round) ?? 0) + 1);
    expect(Math.max(...perRound.values())).toBeLessThanOrEqual(4);
    // Once it answers, it is probed only when the ring brings it: some later rounds do without it.
    const after = probed.slice(fixedAt + 8);
    const rounds = new Set(after.map((p) => p.round));
    const withE = new Set(after.filter((p) => p.target === 'node-e').map((p) => p.round));
    expect(withE.size).toBeLessThan(rounds.size);
  });
});
