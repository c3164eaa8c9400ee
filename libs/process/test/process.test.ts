import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { hasExited, ownChild, processUsage, stopChild } from '../src/index.ts';

describe('stopChild', () => {
  it('stops a child that honours SIGTERM', async () => {
    const child = ownChild(spawn('sleep', ['60']));
    await stopChild(child);
    expect(child.signalCode).toBe('SIGTERM');
    expect(hasExited(child)).toBe(true);
  });

  it('escalates to SIGKILL when the child ignores SIGTERM', async () => {
    const child = ownChild(spawn('bash', ['-c', 'trap "" TERM; echo ready; sleep 60'], { stdio: ['ignore', 'pipe', 'ignore'] }));
    await new Promise((resolve) => child.stdout!.once('data', resolve));
    await stopChild(child, { graceMs: 200 });
    expect(child.signalCode).toBe('SIGKILL');
  });

  it('returns at once for a child that has already exited', async () => {
    const child = spawn('true');
    await new Promise((resolve) => child.once('exit', resolve));
    await stopChild(child);
    expect(child.exitCode).toBe(0);
  });
});

/** A process's state letter from /proc: gone, or a zombie waiting for PID 1 to reap it, means it no longer runs. */
function runState(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] ?? 'gone';
  } catch {
    return 'gone';
  }
}

describe('dieWithParent', () => {
  it('kills the command when its parent is SIGKILLed (no exit hook runs)', async () => {
    const script = `
      import { spawn } from 'node:child_process';
      import { dieWithParent } from ${JSON.stringify(new URL('../src/index.ts', import.meta.url).pathname)};
      const run = dieWithParent('sleep', ['60']);
      const c = spawn(run.command, run.args, { detached: true, stdio: 'ignore' });
      console.log(c.pid);
      setInterval(() => {}, 1000);
    `;
    const parent = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const pid = await new Promise<number>((resolve) => parent.stdout!.once('data', (d) => resolve(Number(String(d).trim()))));
    expect(pid).toBeGreaterThan(0);
    // It runs the command itself (setpriv execs), so this pid is the one a caller measures and stops.
    for (let i = 0; i < 50 && !readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('sleep'); i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]).toBe('sleep');
    parent.kill('SIGKILL');
    await new Promise((resolve) => parent.once('exit', resolve));
    for (let i = 0; i < 100 && !['gone', 'Z'].includes(runState(pid)); i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(['gone', 'Z']).toContain(runState(pid));
  });
});

describe('ownChild', () => {
  it('kills owned children when the parent exits', async () => {
    // A parent that starts a long sleep, owns it, prints its pid and exits without stopping it.
    const script = `
      import { spawn } from 'node:child_process';
      import { ownChild } from ${JSON.stringify(new URL('../src/index.ts', import.meta.url).pathname)};
      const c = ownChild(spawn('sleep', ['60'], { detached: true, stdio: 'ignore' }));
      console.log(c.pid);
      setTimeout(() => process.exit(0), 100);
    `;
    const parent = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    parent.stdout!.on('data', (d) => (out += String(d)));
    await new Promise((resolve) => parent.once('exit', resolve));
    const pid = Number(out.trim());
    expect(pid).toBeGreaterThan(0);
    for (let i = 0; i < 50 && !['gone', 'Z'].includes(runState(pid)); i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(['gone', 'Z']).toContain(runState(pid));
  });
});

describe('processUsage', () => {
  it('reads CPU and memory of a process whose name has spaces and parentheses, and nothing once it is gone', async () => {
    // A busy loop under a name that would shift the fields of a naive split of /proc/<pid>/stat.
    const child = ownChild(spawn('bash', ['-c', 'printf "busy (a b) c" > /proc/self/comm; while :; do :; done']));
    try {
      await new Promise((resolve) => setTimeout(resolve, 600));
      const first = processUsage(child.pid!);
      await new Promise((resolve) => setTimeout(resolve, 400));
      const second = processUsage(child.pid!);
      expect(readFileSync(`/proc/${child.pid}/stat`, 'utf8')).toContain('(busy (a b) c)');
      expect(first!.cpuSeconds).toBeGreaterThan(0.1);
      expect(second!.cpuSeconds).toBeGreaterThan(first!.cpuSeconds);
      expect(second!.rssBytes).toBeGreaterThan(100 * 1024);
      expect(second!.peakRssBytes).toBeGreaterThanOrEqual(second!.rssBytes);
    } finally {
      await stopChild(child);
    }
    expect(processUsage(child.pid!)).toBeUndefined();
  });
});
