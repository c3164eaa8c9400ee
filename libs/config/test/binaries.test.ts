/**
 * Every Sluice binary answers the same way: --version (exit 0, a version), --help (exit 0, the shared etcd and
 * configuration flags where it talks to etcd), a bad flag (exit 2, one line on stderr).
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';

const REPO = new URL('../../../', import.meta.url).pathname;
const LOADER = `file://${REPO}node_modules/tsx/dist/loader.mjs`;

const BINARIES: Array<{ name: string; main: string; etcd: boolean; required?: string[] }> = [
  { name: 'sluice-operator', main: 'services/operator/src/main.ts', etcd: true },
  { name: 'sluice-agent', main: 'services/agent/src/main.ts', etcd: true, required: ['--node-name', 'n1'] },
  { name: 'sluice-health', main: 'services/health/src/main.ts', etcd: true },
  { name: 'sluice', main: 'services/cli/src/main.ts', etcd: true },
  { name: 'sluice-etcd-auth', main: 'libs/kvstore/src/etcd-auth-main.ts', etcd: true },
  { name: 'kube-sim', main: 'services/kube-sim/src/main.ts', etcd: false },
  { name: 'sluice-demo', main: 'services/demo/src/main.ts', etcd: false },
  { name: 'sluice-cni', main: 'services/cni/src/main.ts', etcd: false },
];

function run(main: string, args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // No SLUICE_* from the caller's environment: it would change what the binaries see.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SLUICE_')));
    const child = spawn(process.execPath, ['--import', LOADER, `${REPO}${main}`, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.stderr.on('data', (d) => (stderr += String(d)));
    child.on('exit', (status) => resolve({ status, stdout, stderr }));
  });
}

const ETCD_FLAGS = ['--etcd-config', '--etcd-endpoints', '--etcd-ca-file', '--etcd-cert-file', '--etcd-key-file', '--etcd-username', '--etcd-password-file', '--etcd-prefix'];

describe('every binary: --version, --help, a bad flag', () => {
  it.each(BINARIES)('$name', async ({ main, etcd, required = [] }) => {
    const [version, help, bad] = await Promise.all([run(main, ['--version']), run(main, ['--help']), run(main, [...required, '--no-such-flag'])]);
    expect(version.status).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('--version');
    if (etcd) {
      for (const f of [...ETCD_FLAGS, '--config-dir']) expect(help.stdout).toContain(f);
      for (const old of ['--etcd <', '--root-prefix', '--etcd-root', '--status-port', '--status-host']) expect(help.stdout).not.toContain(old);
    }
    expect(bad.status).toBe(2);
    const lines = bad.stderr.split('\n').filter((l) => l.trim() && !/DeprecationWarning|trace-deprecation/.test(l));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/--no-such-flag/);
  }, 60_000);
});
