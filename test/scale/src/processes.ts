/**
 * The harness's child processes. Every TypeScript child runs as `node --import tsx <file>` (never the tsx CLI, whose
 * grandchild would not get our signals), so the pid we hold is the one we measure in /proc and the one we stop; the
 * operator and the health service run compiled, as deploy/ runs them.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dieWithParent, ownChild, stopChild } from '@sluice/process';

const require = createRequire(import.meta.url);
const TSX_LOADER = require.resolve('tsx');

export interface Child<In = unknown, Out = unknown> {
  name: string;
  pid: number;
  process: ChildProcess;
  logFile: string;
  readonly exitReason: string | undefined;
  send(message: In): void;
  /** Resolves with the first message that matches. */
  next<T extends Out>(match: (m: Out) => m is T, timeoutMs: number, what: string): Promise<T>;
  onMessage(listener: (m: Out) => void): void;
  stop(graceMs?: number): Promise<void>;
}

function wrap<In, Out>(name: string, child: ChildProcess, logFile: string): Child<In, Out> {
  if (child.pid === undefined) throw new Error(`could not start ${name}`);
  ownChild(child);
  let exitReason: string | undefined;
  child.once('exit', (code, signal) => {
    exitReason = signal ? `killed by ${signal}` : `exited with code ${code}`;
  });
  const listeners: Array<(m: Out) => void> = [];
  child.on('message', (m) => {
    for (const l of listeners) l(m as Out);
  });
  return {
    name, pid: child.pid, process: child, logFile,
    get exitReason() {
      return exitReason;
    },
    send(message) {
      if (exitReason === undefined && child.connected) child.send(message as object);
    },
    next(match, timeoutMs, what) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${name}: no ${what} within ${Math.round(timeoutMs / 1000)} s (log: ${logFile})`)), timeoutMs);
        const onExit = () => reject(new Error(`${name} ${exitReason ?? 'exited'} before ${what} (log: ${logFile})`));
        child.once('exit', onExit);
        const listener = (m: Out) => {
          if (!match(m)) return;
          clearTimeout(timer);
          child.off('exit', onExit);
          listeners.splice(listeners.indexOf(listener), 1);
          resolve(m);
        };
        listeners.push(listener);
      });
    },
    onMessage(listener) {
      listeners.push(listener);
    },
    stop: (graceMs = 10_000) => stopChild(child, { graceMs }),
  };
}

/** A TypeScript child with an IPC channel. */
export function forkTs<In, Out>(name: string, script: string, args: string[], logFile: string, nodeFlags: string[] = []): Child<In, Out> {
  const fd = openSync(logFile, 'a');
  // Through setpriv's parent-death signal (it execs node, keeping the IPC descriptor): a harness killed by a test
  // runner after a hook timeout takes its children with it.
  const run = dieWithParent(process.execPath, ['--import', TSX_LOADER, ...nodeFlags]);
  const child = fork(script, args, { execPath: run.command, execArgv: run.args, stdio: ['ignore', fd, fd, 'ipc'] });
  closeSync(fd);
  return wrap<In, Out>(name, child, logFile);
}

/**
 * A service without IPC, its output in a log file: a TypeScript script (the harness's own simulators) through tsx, or
 * a compiled service (services/<name>/dist/main.mjs: the operator, the health service) as deploy/ runs it.
 */
export function spawnService(name: string, script: string, args: string[], logFile: string, stdout: 'log' | 'pipe' = 'log'): Child<never, never> {
  const fd = openSync(logFile, 'a');
  const loader = script.endsWith('.ts') ? ['--import', TSX_LOADER] : [];
  const run = dieWithParent(process.execPath, [...loader, script, ...args]);
  const child = spawn(run.command, run.args, { stdio: ['ignore', stdout === 'pipe' ? 'pipe' : fd, fd] });
  closeSync(fd);
  return wrap<never, never>(name, child, logFile);
}
