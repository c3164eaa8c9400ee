/**
 * Stopping in order within a grace period: each step runs after the previous one; once the grace period is over,
 * whatever has not finished is abandoned (logged by name) and the caller goes on to exit. Nothing here may wait on
 * etcd past that point, whatever state etcd is in.
 */
import type { Logger } from '@sluice/log';

export type ShutdownStep = readonly [name: string, run: () => unknown];

/** Runs the steps in order; with `graceMs`, returns after at most that long. Returns the names of abandoned steps. */
export async function stopInOrder(steps: readonly ShutdownStep[], log: Logger, graceMs?: number): Promise<string[]> {
  let current = 0;
  const run = (async () => {
    for (; current < steps.length; current++) {
      try {
        await steps[current]![1]();
      } catch (err) {
        log.warn({ step: steps[current]![0], error: (err as Error).message }, 'shutdown step failed; going on');
      }
    }
  })();
  if (graceMs === undefined) {
    await run;
    return [];
  }
  let timer: NodeJS.Timeout | undefined;
  const expired = await Promise.race([run.then(() => false), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), graceMs)))]);
  clearTimeout(timer);
  if (!expired) return [];
  const abandoned = steps.slice(current).map(([name]) => name);
  log.warn({ graceMs, abandoned }, 'shutdown grace period over: abandoning what has not finished');
  return abandoned;
}
