import type { ChildProcess } from 'node:child_process';

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
