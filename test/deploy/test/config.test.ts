import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { find, mountedConfigMaps, OVERLAYS, REPO, render, workloads, type KubeObject } from '../src/index.ts';

/** The long flags a binary's --help lists, the binary run as the container's command runs it (`node ...`). */
const flagsOf = (() => {
  const cache = new Map<string, Set<string>>();
  return (command: string[]): Set<string> => {
    const id = command.join(' ');
    let flags = cache.get(id);
    if (!flags) {
      expect(command[0]).toBe('node');
      const help = execFileSync(process.execPath, [...command.slice(1), '--help'], { cwd: REPO, encoding: 'utf8', env: { PATH: process.env.PATH } });
      flags = new Set([...help.matchAll(/(?:^|[\s,])--([a-z][a-z0-9-]*)/g)].map((m) => m[1]!));
      cache.set(id, flags);
    }
    return flags;
  };
})();

const envFlag = (name: string) => name.replace(/^SLUICE_/, '').toLowerCase().replace(/_/g, '-');

describe('every setting the manifests give a component is one of its flags', () => {
  for (const dir of ['base', ...OVERLAYS.map((o) => `overlays/${o}`)]) {
    it(dir, () => {
      const objects = render(dir);
      for (const w of workloads(objects)) {
        const spec = w.spec.template.spec;
        for (const c of spec.containers) {
          if (c.command?.[0] !== 'node') continue;
          const flags = flagsOf(c.command);
          const where = `${dir} ${w.metadata.name}/${c.name}`;
          expect(flags.size, where).toBeGreaterThan(5);
          const args = c.args ?? [];
          for (const a of args.filter((x) => x.startsWith('--'))) expect(flags, `${where}: arg ${a}`).toContain(a.slice(2).split('=')[0]);
          for (const e of c.env ?? []) if (e.name.startsWith('SLUICE_')) expect(flags, `${where}: env ${e.name}`).toContain(envFlag(e.name));
          const configDir = args[args.indexOf('--config-dir') + 1];
          const maps = mountedConfigMaps(spec, c).get(configDir ?? '') ?? [];
          expect(maps.length, `${where}: its --config-dir is a mounted ConfigMap`).toBeGreaterThan(0);
          for (const name of maps) {
            const data = (find(objects, 'ConfigMap', name) as KubeObject & { data: Record<string, string> }).data;
            // A key the binary does not know would be ignored without a word: a typo must fail here instead.
            for (const key of Object.keys(data)) expect(flags, `${where}: ${name} key ${key}`).toContain(key);
          }
        }
      }
    });
  }

  it('the flag list is read from the binary itself (a made-up flag is not in it)', () => {
    const flags = flagsOf(['node', '--import', 'tsx', join('services/agent/src/main.ts')]);
    expect(flags).toContain('metrics-port');
    expect(flags).not.toContain('status-port');
  });
});
