import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

const owned = new Set<ChildProcess>();
let exitHookInstalled = false;

/**
 * Makes `child` die with this process: whatever path the parent takes out (an uncaught error, process.exit, a test
 * runner tearing its worker down), no etcd, service or agent it started is left running.
 */
export function ownChild(child: ChildProcess): ChildProcess {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of owned) c.kill('SIGKILL');
    });
  }
  if (child.exitCode !== null || child.signalCode !== null) return child;
  owned.add(child);
  child.once('exit', () => owned.delete(child));
  return child;
}

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((path) => existsSync(path));

/**
 * The argv that runs `command` with the kernel's parent-death signal set (PR_SET_PDEATHSIG through util-linux's
 * setpriv, which execs, so the pid is the command's): when this process is SIGKILLed — a test runner killing a worker
 * whose hook timed out — no exit hook runs, and without it etcd, kube-sim and the services it started would outlive
 * it. Without setpriv the command runs as given; ownChild's exit hook still covers every orderly exit.
 */
export function dieWithParent(command: string, args: readonly string[]): { command: string; args: string[] } {
  if (!SETPRIV) return { command, args: [...args] };
  return { command: SETPRIV, args: ['--pdeathsig', 'KILL', '--', command, ...args] };
}

export function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Sends `signal` (SIGTERM by default), then SIGKILL after `graceMs`; resolves once the process is gone. */
export async function stopChild(child: ChildProcess, options: { signal?: NodeJS.Signals; graceMs?: number } = {}): Promise<void> {
  if (hasExited(child)) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(options.signal ?? 'SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), options.graceMs ?? 5000);
  await gone;
  clearTimeout(timer);
}

export interface ProcessUsage {
  /** utime + stime since the process started. */
  cpuSeconds: number;
  rssBytes: number;
  /** VmHWM: the highest RSS so far. */
  peakRssBytes: number;
}

/** What a process has used, from /proc (benches and the scale harness measure the processes they start); undefined once it is gone. */
export function processUsage(pid: number): ProcessUsage | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may hold spaces and parentheses: the fields after it start past the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kiB = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
    return { cpuSeconds: (Number(fields[11]) + Number(fields[12])) / USER_HZ, rssBytes: kiB('VmRSS'), peakRssBytes: kiB('VmHWM') };
  } catch {
    return undefined;
  }
}

/** The unit of /proc/<pid>/stat's times on Linux. */
const USER_HZ = 100;
