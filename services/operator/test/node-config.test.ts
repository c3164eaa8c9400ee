/**
 * Per-node configuration end to end through kube-sim (the project's CRDs applied with kubectl): a SluiceNodeConfig
 * selecting a label, `kubectl label node` moving a node in and out of it, the node's effective record in etcd
 * following, nothing rewritten when nothing changed, and an unknown key reported in the object's status condition.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeRecord, nodeConfigRecord } from '@sluice/kvstore';
import { createLogger } from '@sluice/log';
import { createRegistry } from '@sluice/metrics';
import { loadKubeConfig } from '../src/kube-client.ts';
import { Operator } from '../src/operator.ts';
import { startEnv, waitFor, type Env } from './env.ts';

const CRDS = fileURLToPath(new URL('../../../deploy/crds', import.meta.url));
const run = promisify(execFile);

describe('SluiceNodeConfig → etcd through the operator', () => {
  let env: Env;
  let operator: Operator;
  let dir: string;
  let node: string;
  const log = createLogger({ component: 'operator', level: 'warn' });
  const kubectl = async (...args: string[]) => (await run('kubectl', ['--kubeconfig', env.sim.kubeconfigPath, '--cache-dir', join(dir, 'cache'), ...args], { timeout: 30_000 })).stdout;
  const apply = async (name: string, yaml: string) => {
    writeFileSync(join(dir, `${name}.yaml`), yaml);
    await kubectl('apply', '-f', join(dir, `${name}.yaml`));
  };
  const record = async (n: string) => {
    const kv = await env.client.get(env.keys.effectiveNodeConfig(n));
    return kv === null ? undefined : decodeRecord(nodeConfigRecord, 'effective config', kv);
  };
  const modRevision = async (n: string) => Number((await env.client.get(env.keys.effectiveNodeConfig(n)).exec()).kvs[0]?.mod_revision);
  const conditions = async (name: string) => (JSON.parse(await kubectl('get', 'sluicenodeconfig', name, '-o', 'json')) as { status?: { conditions?: Array<{ type: string; status: string; reason: string; message: string }> } }).status?.conditions ?? [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sluice-nodeconfig-'));
    env = await startEnv({ nodes: 3, services: 0 });
    await kubectl('apply', '-k', CRDS);
    node = (await kubectl('get', 'nodes', '-o', 'jsonpath={.items[0].metadata.name}')).trim();
    operator = new Operator({ kube: loadKubeConfig({ server: env.sim.url }), etcd: env.client, keys: env.keys, registry: createRegistry(), log, identity: 'nodeconfig-1', leaseTtlSeconds: 3 });
    operator.start();
    await operator.waitUntilSynced(AbortSignal.timeout(30_000));
  }, 90_000);
  afterAll(async () => {
    await operator?.stop(2_000);
    await env?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('follows a node label into and out of a SluiceNodeConfig, writing only on change', async () => {
    await apply('base', 'apiVersion: sluice.io/v1alpha1\nkind: SluiceNodeConfig\nmetadata: {name: 10-base}\nspec:\n  defaults: {masquerade: iptables, host-routing: auto}\n');
    await apply('ebpf', 'apiVersion: sluice.io/v1alpha1\nkind: SluiceNodeConfig\nmetadata: {name: 50-ebpf}\nspec:\n  nodeSelector: {matchLabels: {sluice.io/enable-ebpf: "true"}}\n  defaults: {masquerade: bpf, host-routing: bpf}\n');
    expect(await waitFor('the base record', async () => (await record(node))?.masquerade === 'iptables' && record(node))).toEqual({ v: 1, masquerade: 'iptables', hostRouting: 'auto', sources: ['10-base'] });
    const before = await modRevision(node);

    await kubectl('label', 'node', node, 'sluice.io/enable-ebpf=true');
    expect(await waitFor('the eBPF record', async () => (await record(node))?.masquerade === 'bpf' && record(node))).toEqual({ v: 1, masquerade: 'bpf', hostRouting: 'bpf', sources: ['10-base', '50-ebpf'] });
    expect(await conditions('50-ebpf')).toEqual(expect.arrayContaining([expect.objectContaining({ type: 'sluice.io/valid', status: 'True' }), expect.objectContaining({ type: 'sluice.io/selected-nodes', status: 'True', message: `1 node(s): ${node}` })]));

    // An unrelated label change rewrites nothing.
    const afterLabel = await modRevision(node);
    expect(afterLabel).toBeGreaterThan(before);
    await kubectl('label', 'node', node, 'team=blue');
    await new Promise((r) => setTimeout(r, 500));
    expect(await modRevision(node)).toBe(afterLabel);

    await kubectl('label', 'node', node, 'sluice.io/enable-ebpf-');
    expect(await waitFor('back to the base record', async () => (await record(node))?.masquerade === 'iptables' && record(node))).toMatchObject({ masquerade: 'iptables', sources: ['10-base'] });
  });

  it('reports an unknown key and a bad value in the status, applies the rest, and drops a record no object sets', async () => {
    await apply('odd', 'apiVersion: sluice.io/v1alpha1\nkind: SluiceNodeConfig\nmetadata: {name: 90-odd}\nspec:\n  defaults: {enable-foo: "true", masquerade: nft, routing: native}\n');
    const valid = await waitFor('the InvalidKeys condition', async () => (await conditions('90-odd')).find((c) => c.type === 'sluice.io/valid' && c.status === 'False'));
    expect(valid).toMatchObject({ reason: 'InvalidKeys' });
    expect(valid.message).toContain('unknown key "enable-foo"');
    expect(valid.message).toContain('masquerade: "nft" is not one of off, iptables, bpf');
    expect(await waitFor('routing from 90-odd', async () => (await record(node))?.routing === 'native' && record(node))).toMatchObject({ masquerade: 'iptables', routing: 'native', sources: ['10-base', '90-odd'] });

    await kubectl('delete', 'sluicenodeconfig', '10-base', '90-odd');
    await waitFor('the record to go', async () => (await record(node)) === undefined);
  });
});
