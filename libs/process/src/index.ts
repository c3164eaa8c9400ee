import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';

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
