import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEMO_STATE_ENV, DemoStateError, demoStatePath, loadDemoState, readDemoStateFile, writeDemoState, type DemoStateInput } from '../src/index.ts';

const ready: DemoStateInput = { version: 1, phase: 'ready', pid: process.pid, startedAt: '2026-11-21T00:00:00.000Z', etcd: { endpoints: ['http://127.0.0.1:2379'] } };
const made: string[] = [];
const tmp = () => {
  const dir = mkdtempSync(join(tmpdir(), 'demo-state-'));
  made.push(dir);
  return dir;
};
afterAll(() => made.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

describe('demo state file', () => {
  it('is found walking up from a subdirectory, stopping at the repository root', () => {
    const repo = tmp();
    mkdirSync(join(repo, '.git'));
    mkdirSync(join(repo, '.sluice'));
    mkdirSync(join(repo, 'services/cli/src'), { recursive: true });
    writeFileSync(join(repo, '.sluice/demo.json'), '{}');
    expect(demoStatePath(join(repo, 'services/cli/src'), {})).toBe(join(repo, '.sluice/demo.json'));
    const other = tmp();
    mkdirSync(join(other, '.git'));
    mkdirSync(join(other, 'sub'));
    // None found: where the demo would write it, at the repository root.
    expect(demoStatePath(join(other, 'sub'), {})).toBe(join(other, '.sluice/demo.json'));
  });

  it('$SLUICE_DEMO_STATE wins', () => {
    expect(demoStatePath('/', { [DEMO_STATE_ENV]: '/x/y.json' })).toBe('/x/y.json');
  });

  it('round-trips, and the exclusive write is a lock', async () => {
    const path = join(tmp(), 'd/demo.json');
    await writeDemoState(path, ready, { exclusive: true });
    await expect(writeDemoState(path, ready, { exclusive: true })).rejects.toMatchObject({ code: 'EEXIST' });
    const state = await loadDemoState(path);
    expect(state).toMatchObject({ phase: 'ready', nodes: [], pods: [], processes: [] });
    expect(JSON.parse(readFileSync(path, 'utf8')).etcd.endpoints).toEqual(['http://127.0.0.1:2379']);
  });

  it('missing, stale, starting and invalid files are DemoStateErrors with a reason', async () => {
    const dir = tmp();
    await expect(loadDemoState(join(dir, 'none.json'))).rejects.toMatchObject({ reason: 'missing' });
    const dead = spawnSync('true').pid!;
    await writeDemoState(join(dir, 'stale.json'), { ...ready, pid: dead });
    await expect(loadDemoState(join(dir, 'stale.json'))).rejects.toMatchObject({ reason: 'stale' });
    await writeDemoState(join(dir, 'starting.json'), { ...ready, phase: 'starting', etcd: undefined });
    await expect(loadDemoState(join(dir, 'starting.json'))).rejects.toMatchObject({ reason: 'starting' });
    writeFileSync(join(dir, 'bad.json'), '{"version":1,"phase":"ready","pid":"x"}');
    const err = await loadDemoState(join(dir, 'bad.json')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DemoStateError);
    expect((err as DemoStateError).message).toMatch(/pid: /);
    writeFileSync(join(dir, 'garbage.json'), 'not json');
    await expect(readDemoStateFile(join(dir, 'garbage.json'))).rejects.toMatchObject({ reason: 'invalid' });
  });
});
