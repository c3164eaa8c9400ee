/**
 * The compiled services (scripts/build-services.mjs, what deploy/ and the Containerfile run) are the same programs as
 * their TypeScript sources: the same flags, version and exit codes, and the files the sources find beside themselves
 * (package.json, proto/, the BPF objects) found from the bundle too. The metrics test runs the operator and health
 * bundles against etcd and kube-sim.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { render, REPO, workloads } from '../src/index.ts';

const SERVICES = ['operator', 'agent', 'health'];

function run(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, args, { cwd: REPO, encoding: 'utf8', env: { PATH: process.env.PATH }, timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('each compiled service is its sources', () => {
  for (const service of SERVICES) {
    const bundle = join('services', service, 'dist', 'main.mjs');
    const source = join('services', service, 'src', 'main.ts');

    it(`${service}: --help and --version answer as the sources do; a bad flag exits 2 with one line`, () => {
      const built = run([bundle, '--help']);
      expect(built.status, built.stderr).toBe(0);
      expect(built.stdout).toBe(run(['--import', 'tsx', source, '--help']).stdout);
      const version = (JSON.parse(readFileSync(join(REPO, 'services', service, 'package.json'), 'utf8')) as { version: string }).version;
      expect(run([bundle, '--version']).stdout.trim()).toBe(version);
      const bad = run([bundle, '--no-such-flag']);
      expect(bad.status).toBe(2);
      expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    });

    it(`${service}: no TypeScript and no workspace import is left to load at run time`, () => {
      const text = readFileSync(join(REPO, bundle), 'utf8');
      expect(text).not.toMatch(/from ["']@sluice\//);
      expect(text).not.toMatch(/from ["'][^"']+\.ts["']/);
      // Paths the sources resolve from their own location point back at the sources' folders.
      for (const m of text.matchAll(/new URL\("([^"]+)", import\.meta\.url\)/g)) expect(m[1]).toMatch(/^\.\.\/.*\.ts$/);
    });
  }

  it('every file a bundle finds beside a source (package.json, proto/, the BPF object, the CNI plugin) is there', () => {
    const found: string[] = [];
    for (const service of SERVICES) {
      const bundle = pathToFileURL(join(REPO, 'services', service, 'dist', 'main.mjs'));
      const text = readFileSync(bundle, 'utf8');
      for (const m of text.matchAll(/new URL\("([^"]+)", new URL\("([^"]+)", import\.meta\.url\)\.href\)/g)) {
        const target = fileURLToPath(new URL(m[1]!, new URL(m[2]!, bundle)));
        expect(existsSync(target), `${service}: ${m[0]}`).toBe(true);
        found.push(relative(REPO, target));
      }
    }
    expect(found).toEqual(expect.arrayContaining(['bpf/build/sluice.bpf.o', 'proto', 'libs/config/package.json', 'services/agent/package.json']));
  });

  it('the manifests run the compiled services, without a TypeScript loader', () => {
    const commands = workloads(render('base')).flatMap((w) => w.spec.template.spec.containers.map((c) => c.command ?? []));
    const node = commands.filter((c) => c[0] === 'node');
    expect(node.map((c) => c.at(-1)).sort()).toEqual(SERVICES.map((s) => `services/${s}/dist/main.mjs`).sort());
    for (const c of node) expect(c).not.toContain('tsx');
  });
});
