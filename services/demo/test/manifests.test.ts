/**
 * The demo's kustomization (manifests.ts), built with kubectl's kustomize as `kubectl apply -k` builds it: the
 * agents' ConfigMap carries `--masquerade` (the migration walkthrough starts from iptables) and keeps the manifests'
 * value without it; a bad `--masquerade` is exit 2 with one line.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { TSX_LOADER } from '../src/children.ts';
import { writeDemoKustomization } from '../src/manifests.ts';
import { REPO_ROOT } from '../src/paths.ts';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'sluice-demo-manifests-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function agentConfig(name: string, masquerade?: 'off' | 'iptables' | 'bpf'): Promise<Record<string, string>> {
  const out = writeDemoKustomization({
    dir: join(dir, name), kubeconfig: join(dir, 'kubeconfig'), etcd: { clientFiles: () => ({ endpoints: ['https://127.0.0.1:2379'] }) }, kubeServer: 'http://127.0.0.1:1',
    health: undefined, ...(masquerade ? { masquerade } : {}),
  });
  const { stdout } = await run('kubectl', ['kustomize', out], { timeout: 60_000, maxBuffer: 16 << 20 });
  // kustomize prints each object's keys sorted, data's one per line: enough to read one value without a YAML parser.
  const doc = stdout.split(/^---$/m).find((d) => /^kind: ConfigMap$/m.test(d) && /^  name: sluice-agent-config$/m.test(d));
  if (!doc) throw new Error('no sluice-agent-config in the build');
  return Object.fromEntries([...doc.matchAll(/^  ([a-z-]+): "?([^"\n]*)"?$/gm)].map((m) => [m[1]!, m[2]!]));
}

describe('demo manifests: --masquerade', () => {
  it('sets the agents\' masquerading cluster-wide, and leaves the manifests\' default without it', async () => {
    expect((await agentConfig('iptables', 'iptables')).masquerade).toBe('iptables');
    expect((await agentConfig('default')).masquerade).toBe('false');
  }, 120_000);

  it('a bad value is exit 2 with one line', async () => {
    const r = await run(process.execPath, ['--import', TSX_LOADER, join(REPO_ROOT, 'services/demo/src/main.ts'), '--masquerade', 'nft'], { timeout: 60_000 }).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code?: number; stderr?: string }) => ({ code: err.code ?? 1, stderr: err.stderr ?? '' }),
    );
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/masquerade/);
  }, 60_000);
});
