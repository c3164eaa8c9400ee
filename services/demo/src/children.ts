/**
 * The demo's child processes: each Sluice service runs as its own node process (tsx as an --import loader, so that
 * the pid we hold is the service itself and a signal reaches it directly), its stderr in a log file.
 */
import { spawn } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { ownChild, stopChild } from '@sluice/process';

const require = createRequire(import.meta.url);
/** tsx's loader, resolved from here so that the children do not depend on the cwd. */
export const TSX_LOADER = require.resolve('tsx');

export interface ChildService {
  name: string;
  pid: number;
  logFile: string;
  readonly exited: boolean;
  /** Why it exited, if it did. */
  readonly exitReason: string | undefined;
  /** SIGTERM, then SIGKILL after `graceMs`. Resolves when the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

export function spawnService(name: string, script: string, args: string[], logFile: string, env: NodeJS.ProcessEnv = {}): ChildService {
  const fd = openSync(logFile, 'a');
  const child = spawn(process.execPath, ['--import', TSX_LOADER, script, ...args], {
    stdio: ['ignore', fd, fd],
    env: { ...process.env, ...env },
  });
  closeSync(fd);
  if (child.pid === undefined) throw new Error(`could not start ${name}`);
  ownChild(child);
  let exitReason: string | undefined;
  child.once('exit', (code, signal) => {
    exitReason = signal ? `killed by ${signal}` : `exited with code ${code}`;
  });
  return {
    name,
    pid: child.pid,
    logFile,
    get exited() {
      return exitReason !== undefined;
    },
    get exitReason() {
      return exitReason;
    },
    stop: (graceMs = 5000) => stopChild(child, { graceMs }),
  };
}

/** The last lines of a log, for an error message that says why a service died. */
export function tail(logFile: string, lines = 5): string {
  try {
    return readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** Polls `check` until it is true; fails early if the service exits, and after `timeoutMs`. */
export async function waitFor(service: ChildService | undefined, what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (service?.exited) throw new Error(`${service.name} ${service.exitReason} before ${what}; its log (${service.logFile}):\n${tail(service.logFile)}`);
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${Math.round(timeoutMs / 1000)} s${service ? `; see ${service.logFile}` : ''}`);
    await sleep(200);
  }
}

export async function httpOk(url: string): Promise<boolean> {
  const response = await fetch(url, { signal: AbortSignal.timeout(1000) });
  await response.arrayBuffer();
  return response.ok;
}
