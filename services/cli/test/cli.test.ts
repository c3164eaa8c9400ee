import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../src/cli.ts';
import { capture, deadPid, tempDir } from './helpers.ts';

describe('sluice: flags, help and errors', () => {
  it('--help on the root and on a subcommand exits 0 and lists the commands and flags', async () => {
    const root = capture();
    expect(await runCli(['--help'], root.io)).toBe(0);
    for (const cmd of ['status', 'health', 'nodes', 'endpoints', 'bpf', 'connectivity']) expect(root.out()).toContain(cmd);
    const sub = capture();
    expect(await runCli(['bpf', 'ipcache', '--help'], sub.io)).toBe(0);
    expect(sub.out()).toContain('--node <name>');
  });

  it('an unknown flag exits 2 with one line', async () => {
    const c = capture();
    expect(await runCli(['status', '--bogus'], c.io)).toBe(2);
    expect(c.err()).toBe("error: unknown option '--bogus'\n");
  });

  it('an unknown command exits 2 with one line', async () => {
    const c = capture();
    expect(await runCli(['statsu'], c.io)).toBe(2);
    expect(c.err().trim().split('\n')).toHaveLength(1);
    expect(c.err()).toContain("unknown command 'statsu'");
  });

  it('a bad --etcd-endpoints value exits 2 naming the flag', async () => {
    const c = capture();
    expect(await runCli(['status', '--etcd-endpoints', 'localhost:2379'], c.io)).toBe(2);
    expect(c.err()).toMatch(/^sluice: invalid --etcd-endpoints: .*http/);
  });

  it('a missing required flag exits 2', async () => {
    const c = capture();
    expect(await runCli(['bpf', 'endpoints'], c.io)).toBe(2);
    expect(c.err()).toBe("error: required option '--node <name>' not specified\n");
  });

  it('no demo running: one clear line and exit 1, for every command that needs the cluster', async () => {
    for (const argv of [['status'], ['nodes'], ['endpoints'], ['health', 'status'], ['connectivity', 'test']]) {
      const c = capture();
      expect(await runCli(argv, c.io), argv.join(' ')).toBe(1);
      expect(c.err()).toMatch(/^sluice: no demo running: \S+demo\.json not found; start one with npm start, or pass --etcd-endpoints\n$/);
      expect(c.out()).toBe('');
    }
  });

  it('a state file left by a dead demo is called stale, not trusted', async () => {
    const path = join(tempDir('sluice-cli-'), 'demo.json');
    const pid = deadPid();
    writeFileSync(path, JSON.stringify({ version: 1, phase: 'ready', pid, startedAt: 'x', etcd: { endpoints: ['http://127.0.0.1:1'] } }));
    const c = capture({ statePath: path });
    expect(await runCli(['status'], c.io)).toBe(1);
    expect(c.err()).toBe(`sluice: no demo running: ${path} was left by demo pid ${pid}, which is gone; start one with npm start\n`);
  });

  it('a corrupt state file says so', async () => {
    const path = join(tempDir('sluice-cli-'), 'demo.json');
    writeFileSync(path, '{"version": 7}');
    const c = capture({ statePath: path });
    expect(await runCli(['nodes'], c.io)).toBe(1);
    expect(c.err()).toMatch(/^sluice: \S+ is not a demo state file this version understands \(version: .*\); restart the demo\n$/);
  });

  it('an etcd that does not answer: exit 1 naming it', async () => {
    const c = capture();
    expect(await runCli(['status', '--etcd-endpoints', 'http://127.0.0.1:9'], c.io)).toBe(1);
    expect(c.err()).toMatch(/^sluice: cannot reach etcd at http:\/\/127\.0\.0\.1:9: .*; is the demo running \(npm start\)\?\n$/);
  });

  it('health status without a health address says how to give one', async () => {
    const c = capture();
    expect(await runCli(['health', 'status', '--etcd-endpoints', 'http://127.0.0.1:9'], c.io)).toBe(1);
    expect(c.err()).toBe('sluice: no health service known: pass --health host:port, or start the demo with npm start\n');
  });

  it('a health service that is not there: exit 1 naming the address', async () => {
    const c = capture();
    expect(await runCli(['health', 'status', '--etcd-endpoints', 'http://127.0.0.1:9', '--health', '127.0.0.1:9'], c.io)).toBe(1);
    expect(c.err()).toMatch(/^sluice: health service at 127\.0\.0\.1:9 unreachable: /);
  });

  it('bpf on a node without pins says where it looked', async () => {
    const c = capture();
    expect(await runCli(['bpf', 'tunnel', '--node', 'n1', '--pin-dir', '/sys/fs/bpf/sluice/no-such-node-xyz'], c.io)).toBe(1);
    expect(c.err()).toBe('sluice: no pinned maps for node n1: /sys/fs/bpf/sluice/no-such-node-xyz does not exist (is its agent running? are you root?)\n');
  });
});
