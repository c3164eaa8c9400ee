import { Command } from 'commander';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import type { ClusterHealth, HealthClient, NodeHealth } from '@sluice/health-api';
import { freshView } from '../src/health-commands.ts';
import { addOutputFormats } from '../src/output.ts';
import { runCli } from '../src/cli.ts';
import { capture } from './helpers.ts';

describe('-o json|yaml', () => {
  const program = (io: { stdout: (t: string) => void }) => {
    const root = new Command('t').exitOverride();
    root.command('show').option('--json', 'json').action((o: { json?: boolean }) => io.stdout(o.json ? `${JSON.stringify({ nodes: ['a', 'b'], ok: true })}\n` : 'a, b\n'));
    root.command('plain').action(() => io.stdout('plain\n'));
    addOutputFormats(root, io);
    return root;
  };
  const run = async (argv: string[]) => {
    let out = '';
    const io = { stdout: (t: string) => void (out += t) };
    await program(io).parseAsync(argv, { from: 'user' });
    return out;
  };

  it('prints the same document as text, JSON or YAML', async () => {
    expect(await run(['show'])).toBe('a, b\n');
    expect(JSON.parse(await run(['show', '-o', 'json']))).toEqual({ nodes: ['a', 'b'], ok: true });
    const yaml = await run(['show', '-o', 'yaml']);
    expect(yaml).toContain('nodes:\n  - a\n');
    expect(parse(yaml)).toEqual({ nodes: ['a', 'b'], ok: true });
  });

  it('is offered on every sluice command that prints state, and refuses an unknown format with exit 2', async () => {
    for (const argv of [['status'], ['health', 'status'], ['nodes'], ['endpoints'], ['connectivity', 'test'], ['bpf', 'ipcache']]) {
      const c = capture();
      expect(await runCli([...argv, '--help'], c.io)).toBe(0);
      expect(c.out(), argv.join(' ')).toContain('-o, --output <format>');
    }
    const bad = capture();
    expect(await runCli(['nodes', '-o', 'xml'], bad.io)).toBe(2);
    expect(bad.err().trim().split('\n')).toHaveLength(1);
  });

  it('has TLS flags for the health service, checked before anything is dialled', async () => {
    const c = capture();
    expect(await runCli(['--help'], c.io)).toBe(0);
    for (const f of ['--health-tls-ca', '--health-tls-cert', '--health-tls-key', '--health-tls-server-name']) expect(c.out()).toContain(f);
    const bad = capture();
    expect(await runCli(['health', 'status', '--etcd-endpoints', 'http://127.0.0.1:9', '--health', '127.0.0.1:9', '--health-tls-ca', 'ca.pem', '--health-tls-cert', 'c.pem'], bad.io)).toBe(2);
    expect(bad.err()).toMatch(/--health-tls-cert/);
  });
});

describe('health status --probe', () => {
  it('waits for an answer in which every node was probed after the command started', async () => {
    const node = (name: string, lastProbeUnixMs: number) => ({ name, lastProbeUnixMs }) as NodeHealth;
    const answers: ClusterHealth[] = [
      { summary: {} as ClusterHealth['summary'], nodes: [node('a', 100), node('b', 50)] },
      { summary: {} as ClusterHealth['summary'], nodes: [node('a', 120), node('b', 110)] },
    ];
    let calls = 0;
    const client = { getClusterHealth: async () => answers[Math.min(calls++, 1)]! } as unknown as HealthClient;
    const view = await freshView(client, 100, 10_000, async () => undefined);
    expect(view.nodes.map((n) => n.lastProbeUnixMs)).toEqual([120, 110]);
    expect(calls).toBe(2);
    const stuck = { getClusterHealth: async () => answers[0]! } as unknown as HealthClient;
    await expect(freshView(stuck, 100, 0, async () => undefined)).rejects.toThrow(/1 of 2 nodes not probed since \(b\)/);
  });
});
