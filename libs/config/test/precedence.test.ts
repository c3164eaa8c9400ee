import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { applyConfigDir, Command, flag } from '../src/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'sluice-config-dir-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// A binary made of parseOptions alone, run as a process: exit codes and output are what users see.
const SCRIPT = `
  import { Command, flag, parseOptions, z } from ${JSON.stringify(new URL('../src/index.ts', import.meta.url).pathname)};
  const program = new Command('sluice-t')
    .addOption(flag('--node-name <name>', 'node').makeOptionMandatory())
    .addOption(flag('--log-level <level>', 'level', 'info'))
    .addOption(flag('--metrics-port <port>', 'port', '9090'))
    .addOption(flag('--masquerade', 'snat', false));
  const o = parseOptions(program, z.object({ nodeName: z.string(), logLevel: z.string(), metricsPort: z.coerce.number(), masquerade: z.boolean(), configDir: z.string().optional() }));
  console.log(JSON.stringify(o));
`;
const scriptFile = join(dir, 'binary.mts');
writeFileSync(scriptFile, SCRIPT);
function run(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', scriptFile, ...args], {
    env: { PATH: process.env.PATH!, ...env },
    encoding: 'utf8',
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('one configuration model: flags > SLUICE_* environment > configuration directory > defaults', () => {
  const cm = join(dir, 'configmap');
  mkdirSync(cm);
  writeFileSync(join(cm, 'node-name'), 'from-dir\n');
  writeFileSync(join(cm, 'log-level'), 'warn');
  writeFileSync(join(cm, 'metrics-port'), '7000');
  writeFileSync(join(cm, 'masquerade'), 'true');
  writeFileSync(join(cm, 'some-other-binarys-key'), 'ignored');
  // What a mounted ConfigMap looks like: ..data links beside the keys.
  mkdirSync(join(cm, '..2026_12_01'));
  symlinkSync('..2026_12_01', join(cm, '..data'));

  it('takes values from the directory, the environment over it, the flags over both', () => {
    const fromDir = run(['--config-dir', cm]);
    expect(fromDir.status).toBe(0);
    expect(JSON.parse(fromDir.stdout)).toMatchObject({ nodeName: 'from-dir', logLevel: 'warn', metricsPort: 7000, masquerade: true });

    const envOverDir = run([], { SLUICE_CONFIG_DIR: cm, SLUICE_LOG_LEVEL: 'debug' });
    expect(JSON.parse(envOverDir.stdout)).toMatchObject({ nodeName: 'from-dir', logLevel: 'debug', metricsPort: 7000 });

    const flagsOverAll = run(['--config-dir', cm, '--log-level', 'error', '--node-name', 'cli'], { SLUICE_LOG_LEVEL: 'debug' });
    expect(JSON.parse(flagsOverAll.stdout)).toMatchObject({ nodeName: 'cli', logLevel: 'error', metricsPort: 7000 });

    const defaults = run(['--node-name', 'n']);
    expect(JSON.parse(defaults.stdout)).toMatchObject({ nodeName: 'n', logLevel: 'info', metricsPort: 9090, masquerade: false });
  });

  it('prints the version and help with exit code 0, and a bad flag in one line with exit code 2', () => {
    const version = run(['--version']);
    expect(version.status).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    const help = run(['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('--config-dir');
    const bad = run(['--node-name', 'n', '--metrics-prot', '1']);
    expect(bad.status).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/unknown option '--metrics-prot'.*--metrics-port/);
    const missing = run([]);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/--node-name/);
  });

  it('refuses a boolean key that is neither true nor false, and a missing directory', () => {
    const bad = join(dir, 'bad');
    mkdirSync(bad);
    writeFileSync(join(bad, 'masquerade'), 'yes');
    const program = new Command('t').addOption(flag('--masquerade', 'snat', false));
    expect(() => applyConfigDir(program, bad)).toThrow(/--masquerade: .* must hold true or false/);
    expect(() => applyConfigDir(program, join(dir, 'absent'))).toThrow(/--config-dir: cannot read/);
    const r = run(['--config-dir', join(dir, 'absent'), '--node-name', 'n']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^sluice-t: invalid --config-dir/);
  });
});
