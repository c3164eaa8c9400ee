import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { IMAGE_WORKDIR, readRepoFile, REPO } from '../src/index.ts';

/** The Containerfile's instructions, continuation lines joined, comments dropped. */
function instructions(text: string): Array<{ op: string; args: string }> {
  return text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const [op, ...rest] = l.split(/\s+/);
      return { op: op!.toUpperCase(), args: rest.join(' ') };
    });
}

const containerfile = instructions(readRepoFile('Containerfile'));
const rootPackage = JSON.parse(readRepoFile('package.json')) as { devDependencies: Record<string, string>; dependencies: Record<string, string> };

describe('the Containerfile names only what the repository has', () => {
  it('builds from Node 20 slim, and its WORKDIR is where the manifests run the project', () => {
    const froms = containerfile.filter((i) => i.op === 'FROM').map((i) => i.args);
    expect(froms.length).toBeGreaterThan(0);
    for (const from of froms) expect(from).toMatch(/node:20-[a-z]+-slim/);
    expect(containerfile.filter((i) => i.op === 'WORKDIR').map((i) => i.args)).toEqual([IMAGE_WORKDIR, IMAGE_WORKDIR]);
  });

  it('every path it COPYs from the build context exists', () => {
    const copies = containerfile.filter((i) => i.op === 'COPY' && !i.args.includes('--from='));
    expect(copies.length).toBeGreaterThan(3);
    for (const { args } of copies) {
      const parts = args.split(/\s+/);
      for (const source of parts.slice(0, -1)) expect(existsSync(join(REPO, source)), `COPY ${source}`).toBe(true);
    }
    // Every workspace's folder is copied, or npm ci would miss the lockfile's workspace entries.
    const copied = copies.flatMap(({ args }) => args.split(/\s+/).slice(0, -1)).map((s) => s.replace(/\/$/, ''));
    for (const ws of (JSON.parse(readRepoFile('package.json')) as { workspaces: string[] }).workspaces) {
      expect(copied, ws).toContain(ws.replace(/\/\*$/, ''));
    }
  });

  it('every command it RUNs works on this repository: npm ci has a lockfile, make -C has a Makefile, packages are Debian\'s', () => {
    const runs = containerfile.filter((i) => i.op === 'RUN').map((i) => i.args);
    const commands = runs.flatMap((r) => r.split(/&&/).map((c) => c.trim()));
    expect(commands).toContain('npm ci --no-audit --no-fund');
    expect(existsSync(join(REPO, 'package-lock.json'))).toBe(true);
    for (const c of commands) {
      const make = /^make -C (\S+)/.exec(c);
      if (make) expect(existsSync(join(REPO, make[1]!, 'Makefile')), c).toBe(true);
      // A script it runs is one the image has: copied before the RUN.
      const script = /^node (\S+)/.exec(c);
      if (script) {
        expect(existsSync(join(REPO, script[1]!)), c).toBe(true);
        const copies = containerfile.filter((i) => i.op === 'COPY' && !i.args.includes('--from='));
        expect(copies.some(({ args }) => args.split(/\s+/).slice(0, -1).some((from) => script[1]!.startsWith(from.replace(/\/$/, '')))), `${c}: copied into the build stage`).toBe(true);
      }
      const apt = /^apt-get install .*?--no-install-recommends (.+)$/.exec(c);
      if (apt) {
        // Each package is one Debian knows (the build image is Debian bookworm, like this machine).
        const pkgs = apt[1]!.split(/\s+/);
        const known = execFileSync('apt-cache', ['show', '--no-all-versions', ...pkgs], { encoding: 'utf8' });
        for (const pkg of pkgs) expect(known, pkg).toMatch(new RegExp(`^Package: ${pkg}$`, 'm'));
      }
    }
    // The BPF toolchain the Makefile calls is installed in the build stage.
    expect(commands.join(' ')).toMatch(/clang/);
  });

  it('its CMD runs a compiled entry point that the build stage makes, without a TypeScript loader', () => {
    const cmd = JSON.parse(containerfile.find((i) => i.op === 'CMD')!.args) as string[];
    expect(cmd[0]).toBe('node');
    expect(cmd[1]).toMatch(/^services\/[a-z-]+\/dist\/main\.mjs$/);
    // Built here by scripts/bootstrap.sh, in the image by the RUN that calls the same script.
    expect(existsSync(join(REPO, cmd[1]!))).toBe(true);
    const runs = containerfile.filter((i) => i.op === 'RUN').map((i) => i.args).join(' ');
    expect(runs).toMatch(/node scripts\/build-services\.mjs/);
    expect({ ...rootPackage.dependencies, ...rootPackage.devDependencies }.esbuild).toBeDefined();
  });

  it('the README documents it', () => {
    expect(readRepoFile('README.md')).toMatch(/Containerfile/);
    expect(readRepoFile('deploy/README.md')).toMatch(/Containerfile/);
  });
});

describe('the agent DaemonSet\'s install-cni step', () => {
  it('installs a plugin that runs outside the image and a conflist naming it', () => {
    const host = mkdtempSync(join(tmpdir(), 'sluice-cni-install-'));
    try {
      const env = { ...process.env, CNI_BIN_DIR: join(host, 'bin'), CNI_CONF_DIR: join(host, 'conf'), SLUICE_AGENT_SOCKET: '/var/run/sluice/agent.sock' };
      execFileSync('sh', ['deploy/scripts/install-cni.sh'], { cwd: REPO, env, stdio: 'pipe' });
      const conflist = JSON.parse(readFileSync(join(host, 'conf/05-sluice.conflist'), 'utf8')) as { cniVersion: string; name: string; plugins: Array<{ type: string; agentSocket: string }> };
      expect(conflist.plugins[0]).toMatchObject({ type: 'sluice-cni', agentSocket: '/var/run/sluice/agent.sock' });
      const plugin = join(host, 'bin', conflist.plugins[0]!.type);
      expect(statSync(plugin).mode & 0o111).not.toBe(0);
      // The installed plugin answers on its own (its copy of node and of the project next to it).
      const version = execFileSync(plugin, [], { input: JSON.stringify({ cniVersion: '1.0.0', name: 'sluice', type: 'sluice-cni' }), env: { PATH: '/usr/bin:/bin', CNI_COMMAND: 'VERSION' }, encoding: 'utf8' });
      expect(JSON.parse(version)).toMatchObject({ supportedVersions: expect.arrayContaining([conflist.cniVersion]) });
      // A second run keeps the copy (a node's agent restarting does not copy the project again).
      expect(execFileSync('sh', ['deploy/scripts/install-cni.sh'], { cwd: REPO, env, encoding: 'utf8' })).toMatch(/kept .*sluice-cni\.d/);
    } finally {
      rmSync(host, { recursive: true, force: true });
    }
  });
});
