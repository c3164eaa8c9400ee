import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const LOADER = fileURLToPath(new URL('../../../node_modules/tsx/dist/loader.mjs', import.meta.url));
const agent = (...args: string[]) => spawnSync(process.execPath, ['--import', `file://${LOADER}`, MAIN, ...args], { encoding: 'utf8', timeout: 30_000 });

describe('sluice-agent flags', () => {
  it('--help describes the flags and exits 0', () => {
    const r = agent('--help');
    expect(r.status).toBe(0);
    for (const f of ['--node-name', '--etcd-endpoints', '--etcd-config', '--etcd-ca-file', '--metrics-port', '--config-dir', '--pin-dir', '--netns', '--routing', '--host-routing', '--state-dir', '--api-socket', '--cluster-size', '--cluster-cidr', '--reconcile-interval', '--shutdown-grace', '--api-group', '--masquerade', '--lb-acceleration']) expect(r.stdout).toContain(f);
  });

  it.each([
    [['--etcd-endpoints', 'http://127.0.0.1:2379'], /node-name/],
    [['--node-name', 'n1', '--etcd-endpoints', 'http://127.0.0.1:2379', '--routing', 'bgp'], /--routing/],
    [['--node-name', 'n1', '--etcd-endpoints', 'http://127.0.0.1:2379', '--host-routing', 'fast'], /--host-routing/],
    [['--node-name', 'n1', '--etcd-endpoints', 'nope'], /--etcd-endpoints/],
    [['--node-name', 'n1', '--etcd-endpoints', 'http://127.0.0.1:2379', '--pin-dir', '/tmp/x'], /--pin-dir/],
    [['--node-name', 'n1', '--etcd-endpoints', 'http://127.0.0.1:2379', '--cluster-cidr', '10.128.0.1/9'], /--cluster-cidr/],
    [['--node-name', 'n1', '--etcd-endpoints', 'http://127.0.0.1:2379', '--reconcile-interval', 'often'], /--reconcile-interval/],
    [['--node-name', 'n1', '--etcd-endpoints', 'http://127.0.0.1:2379', '--shutdown-grace', '-1'], /--shutdown-grace/],
    [['--node-name', 'n1', '--etcd-endpoints', 'http://127.0.0.1:2379', '--api-group', 'wheel'], /--api-group/],
    [['--node-name', 'n1', '--etcd-endpoints', 'http://127.0.0.1:2379', '--masquerade', 'nft'], /--masquerade: must be off, iptables or bpf/],
    [['--node-name', 'n1', '--etcd-endpoints', 'http://127.0.0.1:2379', '--non-masquerade-cidrs', '10.0.0.0/8,192.168.1.1/16'], /--non-masquerade-cidrs: each must be an IPv4 network/],
    [['--node-name', 'n1', '--etcd-endpoints', 'http://127.0.0.1:2379', '--lb-acceleration', 'best-effort'], /--lb-acceleration: must be native, generic or disabled/],
    // BPF host routing asked for explicitly with iptables masquerading: an error at start, not a silent fallback.
    [['--node-name', 'n1', '--etcd-endpoints', 'http://127.0.0.1:2379', '--host-routing', 'bpf', '--masquerade', 'iptables'], /--host-routing: BPF host routing requires enable-bpf-masquerade/],
  ])('bad flags %j: exit 2 with one line', (args, pattern) => {
    const r = agent(...args);
    expect(r.status).toBe(2);
    const lines = r.stderr.split('\n').filter((l) => l.trim() && !l.startsWith('npm warn'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(pattern);
  });
});
